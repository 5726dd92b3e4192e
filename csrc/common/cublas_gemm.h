// cuBLAS, loaded at run time (dlopen), for the one dense product the knn GEMM path needs. edgead does
// not link cuBLAS: a box without it (a torch-free deployment without the CUDA toolkit's libraries)
// keeps the fused knn kernel, and the wheel needs no cuBLAS at build time.
//
// Library: $EDGEAD_CUBLAS if set ("0"/"off": never load; else a path or a soname), else the first of
// libcublas.so.13, libcublas.so.12, libcublas.so that loads (an already loaded copy, e.g. torch's or
// CuPy's, is found by its soname). Only the stable C ABI is used: cublasCreate_v2, cublasSetStream_v2,
// cublasGemmEx (enum values as in cublas_api.h / library_types.h since CUDA 11).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace edgead {

// True when cuBLAS could be loaded (the first call loads it; thread-safe).
bool cublas_available();
// Human-readable: "libcublas.so.13" (what was loaded) or why nothing was.
std::string cublas_status();

// Destroys the per-device handles (and their workspaces); the next gemm_abt creates them again. Handles are
// otherwise kept for the process; this is for leak checkers (tools/gpu_sanitize.py). Not while another
// thread runs a product.
void cublas_release();

// C = alpha * A . B^T with row-major A (n x k, leading dimension lda), row-major B (m x k, ldb) and row-major
// fp32 C (n x m, ldc), on `stream`. A and B are both fp16 (fp16_inputs) or both fp32; accumulation is fp32
// (CUBLAS_COMPUTE_32F: no TF32). Needs n, m, k < 2^31. Returns false when cuBLAS is not available
// (nothing enqueued); throws std::runtime_error when cuBLAS reports an error.
bool gemm_abt(bool fp16_inputs, int64_t n, int64_t m, int64_t k, float alpha, const void* A, int64_t lda,
              const void* B, int64_t ldb, float* C, int64_t ldc, cudaStream_t stream);

}  // namespace edgead

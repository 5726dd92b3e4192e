// knn: k nearest memory-bank rows per query (PatchCore scoring). Raw-pointer kernels only.
//
// For query q (row of `queries`, (Q, D)) and bank row b (row of `bank`, (M, D)), both fp32 or both
// fp16 (upcast to fp32, fp32 accumulation):
//   selection distance  d2(q, b) = max(||q||^2 - 2 q.b + ||b||^2, 0)   (tiled GEMM form)
// The k smallest per query are kept (ties -> lowest bank index) without ever forming the Q x M matrix.
// For the k winners the reported distance is then recomputed directly, sqrt(sum((q - b)^2)), and
// the k results re-sorted ascending by (distance, index). Outputs: dist float32 (Q, k), idx int64 (Q, k).
#pragma once

#include <cstdint>

namespace edgead {

// Status codes returned by the CPU kernels (the binding turns them into ValueError).
enum KnnStatus : int { KNN_OK = 0, KNN_NONFINITE_QUERIES = 1, KNN_NONFINITE_BANK = 2 };

// bank_sq_norms: optional (nullptr = computed here), float32 (M,) = ||b||^2.
int knn_cpu(const void* queries, const void* bank, bool fp16, const float* bank_sq_norms, int64_t Q, int64_t M,
            int64_t D, int k, float* out_dist, int64_t* out_idx);

// ||row||^2 of a (N, D) fp32/fp16 matrix into out (N,) float32.
void sq_norms_cpu(const void* x, bool fp16, int64_t N, int64_t D, float* out);

#ifdef EDGEAD_WITH_CUDA
constexpr int kKnnCudaMaxK = 64;
// All pointers are device pointers on the current device; stream is a cudaStream_t. Returns a KnnStatus
// like knn_cpu (NaN/inf in queries or bank), after synchronising the stream; inside CUDA graph capture
// the check is skipped (KNN_OK) and nothing synchronises.
int knn_cuda(const void* queries, const void* bank, bool fp16, const float* bank_sq_norms, int64_t Q, int64_t M,
              int64_t D, int k, float* out_dist, int64_t* out_idx, std::uintptr_t stream);
void sq_norms_cuda(const void* x, bool fp16, int64_t N, int64_t D, float* out, std::uintptr_t stream);
#endif

}  // namespace edgead

// Error checking for .cu files. Kernels take raw pointers; host wrappers throw std::runtime_error
// (pybind11 turns it into RuntimeError) on any CUDA error, including launch errors.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define EDGEAD_CUDA_CHECK(expr)                                                                    \
  do {                                                                                             \
    cudaError_t _err = (expr);                                                                     \
    if (_err != cudaSuccess)                                                                       \
      throw std::runtime_error(std::string("CUDA error in ") + __FILE__ + ":" +                    \
                               std::to_string(__LINE__) + ": " + cudaGetErrorString(_err));       \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately.
#define EDGEAD_CUDA_CHECK_LAUNCH() EDGEAD_CUDA_CHECK(cudaGetLastError())

namespace edgead {
inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }
inline unsigned ceil_div(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }
}  // namespace edgead

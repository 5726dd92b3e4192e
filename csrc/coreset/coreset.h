// coreset: greedy k-center (farthest point) selection, as in PatchCore. Raw-pointer kernels only.
//
// features (N, D) fp32 or fp16 (upcast, fp32 accumulation). Selection order: idx[0] = start; then for
// s = 1..n-1: min_d2[i] = min(min_d2[i], |x_i - x_{idx[s-1]}|^2) for every point i (direct difference
// form, so duplicate points are exactly 0 apart), idx[s] = argmax_i min_d2[i] (ties -> lowest index).
// dist (optional) [s] = sqrt(min_d2[idx[s]]) at selection time, dist[0] = +inf. When fewer than n
// distinct points exist, every min_d2 reaches 0 and argmax returns the lowest index (a repeat).
#pragma once

#include <cstdint>

namespace edgead {

enum CoresetStatus : int { CORESET_OK = 0, CORESET_NONFINITE = 1 };

int coreset_cpu(const void* features, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                float* out_dist /* nullable */);

#ifdef EDGEAD_WITH_CUDA
// Device pointers; returns CORESET_NONFINITE (after a stream sync) when features hold NaN/inf.
int coreset_cuda(const void* features, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                 float* out_dist /* nullable */, std::uintptr_t stream);
#endif

}  // namespace edgead

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

// Resumable form (edgead.ops.CoresetSelector). State after s selections (idx[0..s-1] known):
//   min_d2[i] = min over a < s-1 of |x_i - x_{idx[a]}|^2 (the update for idx[s-1] is done lazily by the
//   next step), assign[i] = the position a attaining it (-1: none; CPU pruning only).
// init writes the state for s = 1 (min_d2 = +inf, assign = -1, idx[0] = start, dist[0] = +inf);
// steps computes idx[s0..s1-1] (and dist) from the state at s0 >= 1 and leaves the state at s1.
// coreset_cpu = check + init + steps(1, n): chunked calls give the identical selection.
int coreset_cpu_check(const void* features, bool fp16, int64_t N, int64_t D);  // CORESET_OK / _NONFINITE
void coreset_cpu_init(int64_t N, int64_t start, float* min_d2, int32_t* assign, int64_t* out_idx, float* out_dist);
void coreset_cpu_steps(const void* features, bool fp16, int64_t N, int64_t D, int64_t s0, int64_t s1, float* min_d2,
                       int32_t* assign, int64_t* out_idx, float* out_dist /* nullable */);

#ifdef EDGEAD_WITH_CUDA
// Device pointers; returns CORESET_NONFINITE (after a stream sync) when features hold NaN/inf.
int coreset_cuda(const void* features, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                 float* out_dist /* nullable */, std::uintptr_t stream);
// Resumable form on the device (same state as above, no assign array). check synchronises the stream.
int coreset_cuda_check(const void* features, bool fp16, int64_t N, int64_t D, std::uintptr_t stream);
void coreset_cuda_init(int64_t N, int64_t start, float* min_d2, int64_t* out_idx, float* out_dist,
                       std::uintptr_t stream);
void coreset_cuda_steps(const void* features, bool fp16, int64_t N, int64_t D, int64_t s0, int64_t s1, float* min_d2,
                        int64_t* out_idx, float* out_dist /* nullable */, std::uintptr_t stream);
#endif

}  // namespace edgead

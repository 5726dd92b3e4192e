// Greedy k-center on CUDA: one kernel launch per selection step, no host round trip between steps.
// Step s: every warp takes points in a grid-stride loop, computes |x_i - x_c|^2 with c = idx[s-1] read
// from device memory (direct difference form, fp32 accumulation, half2 loads for fp16 with even D),
// updates min_d2[i] and keeps its (max, lowest index); a block reduction writes one partial per block;
// the last block to finish (atomic ticket) reduces the partials and writes idx[s] (and dist[s]).
// Rows of 16-byte multiples (fp16 D % 8 == 0, fp32 D % 4 == 0) on a 16-byte aligned base take step_vec_kernel:
// LPR = 8/16/32 lanes per row with 16-byte loads, 32/LPR rows per warp side by side and R = 4 rows per lane in
// flight before the reductions (the one-warp-per-row kernel kept ~2 loads per warp outstanding: 0.31 ms per
// step on 1M x 128 fp16 on an H200, bench/results, against ~0.06 ms to read the 256 MB once).
// Temporaries are edgead::Scratch (common/cuda_scratch.cuh): freed on every path, also on errors.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/cuda_check.cuh"
#include "common/cuda_scratch.cuh"
#include "coreset/coreset.h"

namespace edgead {
namespace {

constexpr int THREADS = 256, WARPS = THREADS / 32;

__device__ __forceinline__ bool better(float va, long long ia, float vb, long long ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return va > vb || (va == vb && ia < ib);
}

template <class T>
__global__ void nonfinite_kernel(const T* __restrict__ x, long long total, int* __restrict__ count) {
  int bad = 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    float v;
    if constexpr (sizeof(T) == 2)
      v = __half2float(x[i]);
    else
      v = x[i];
    bad |= !isfinite(v);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicAdd(count, 1);
}

__global__ void init_kernel(float* __restrict__ mind, long long N, long long* __restrict__ idx, long long start,
                            float* __restrict__ dist) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < N; i += (long long)gridDim.x * blockDim.x)
    mind[i] = __int_as_float(0x7f800000);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    idx[0] = start;
    if (dist) dist[0] = __int_as_float(0x7f800000);
  }
}

template <class T>
__device__ __forceinline__ float row_dist2(const T* __restrict__ xi, const T* __restrict__ xc, long long D, int lane,
                                          bool pairs) {
  float s = 0.f;
  if constexpr (sizeof(T) == 2) {
    if (pairs) {  // D even and a 4-byte aligned base: every row starts on a half2
      const __half2* a = reinterpret_cast<const __half2*>(xi);
      const __half2* c = reinterpret_cast<const __half2*>(xc);
      for (long long j = lane; j < D / 2; j += 32) {
        const float2 fa = __half22float2(a[j]), fc = __half22float2(c[j]);
        const float t0 = fa.x - fc.x, t1 = fa.y - fc.y;
        s = fmaf(t0, t0, s);
        s = fmaf(t1, t1, s);
      }
    } else {
      for (long long j = lane; j < D; j += 32) {
        const float t = __half2float(xi[j]) - __half2float(xc[j]);
        s = fmaf(t, t, s);
      }
    }
  } else {
    for (long long j = lane; j < D; j += 32) {
      const float t = xi[j] - xc[j];
      s = fmaf(t, t, s);
    }
  }
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// Block-wide (value, index) arg-max of every thread's (bv, bi) into sv[0], si[0]; ties -> lowest index.
__device__ __forceinline__ void block_argmax(float* sv, long long* si, float bv, long long bi) {
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int w = THREADS / 2; w > 0; w /= 2) {
    if (threadIdx.x < w && better(sv[threadIdx.x + w], si[threadIdx.x + w], sv[threadIdx.x], si[threadIdx.x])) {
      sv[threadIdx.x] = sv[threadIdx.x + w];
      si[threadIdx.x] = si[threadIdx.x + w];
    }
    __syncthreads();
  }
}

// End of a step, shared by both step kernels: block arg-max of the threads' (bv, bi) into this block's
// partial; the last block to finish (atomic ticket) reduces the partials and writes idx[s] (and dist[s]).
__device__ __forceinline__ void finish_step(float* sv, long long* si, bool& last, float bv, long long bi,
                                            float* __restrict__ part_v, long long* __restrict__ part_i,
                                            unsigned* __restrict__ ticket, long long* __restrict__ idx, long long s,
                                            float* __restrict__ dist) {
  block_argmax(sv, si, bv, bi);  // result in sv[0], si[0]
  if (threadIdx.x == 0) {
    part_v[blockIdx.x] = sv[0];
    part_i[blockIdx.x] = si[0];
    __threadfence();
    last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  bv = -1.f;
  bi = -1;
  for (int b = threadIdx.x; b < (int)gridDim.x; b += THREADS) {
    const float v = __ldcg(part_v + b);
    const long long i = __ldcg(part_i + b);
    if (better(v, i, bv, bi)) {
      bv = v;
      bi = i;
    }
  }
  block_argmax(sv, si, bv, bi);  // result in sv[0], si[0]
  if (threadIdx.x == 0) {
    idx[s] = si[0];
    if (dist) dist[s] = sqrtf(sv[0]);
    *ticket = 0u;  // ready for the next step (kernel boundary orders it)
  }
}

template <class T>
__global__ void __launch_bounds__(THREADS) step_kernel(const T* __restrict__ x, long long N, long long D,
                                                       long long* __restrict__ idx, long long s, float* __restrict__ mind,
                                                       float* __restrict__ part_v, long long* __restrict__ part_i,
                                                       unsigned* __restrict__ ticket, float* __restrict__ dist) {
  __shared__ float sv[THREADS];
  __shared__ long long si[THREADS];
  __shared__ bool last;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const long long cur = idx[s - 1];
  const bool pairs = (D % 2 == 0) && (reinterpret_cast<uintptr_t>(x) % 4 == 0);
  const T* xc = x + cur * D;
  float bv = -1.f;
  long long bi = -1;
  const long long total_warps = (long long)gridDim.x * WARPS;
  for (long long i = (long long)blockIdx.x * WARPS + warp; i < N; i += total_warps) {
    const float d2 = row_dist2(x + i * D, xc, D, lane, pairs);
    const float m = fminf(mind[i], d2);
    if (lane == 0) mind[i] = m;
    if (m > bv) {  // ascending i per warp: '>' keeps the lowest index
      bv = m;
      bi = i;
    }
  }
  finish_step(sv, si, last, bv, bi, part_v, part_i, ticket, idx, s, dist);
}


// Sum of squared differences of 16 bytes of a row and of the centre (8 halves or 4 floats), fp32.
template <class T>
__device__ __forceinline__ float d2_16B(const float4& a, const float4& c) {
  float s = 0.f;
  if constexpr (sizeof(T) == 2) {
    const float av[4] = {a.x, a.y, a.z, a.w}, cv[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      __half2 ha, hc;
      memcpy(&ha, &av[w], 4);
      memcpy(&hc, &cv[w], 4);
      const float2 fa = __half22float2(ha), fc = __half22float2(hc);
      const float t0 = fa.x - fc.x, t1 = fa.y - fc.y;
      s = fmaf(t0, t0, s);
      s = fmaf(t1, t1, s);
    }
  } else {
    const float t0 = a.x - c.x, t1 = a.y - c.y, t2 = a.z - c.z, t3 = a.w - c.w;
    s = fmaf(t0, t0, s);
    s = fmaf(t1, t1, s);
    s = fmaf(t2, t2, s);
    s = fmaf(t3, t3, s);
  }
  return s;
}

// The step of step_kernel for 16-byte rows: group g = lane / LPR of a warp owns rows base + r * G + g
// (r < R), its LPR lanes split each row's 16-byte vectors (j = sub, sub + LPR, ...), a butterfly over the
// group's lanes sums them. Per lane the rows ascend, so '>' keeps the lowest index; block_argmax breaks
// the remaining ties by index.
template <class T, int LPR>
__global__ void __launch_bounds__(THREADS) step_vec_kernel(const T* __restrict__ x, long long N, long long D,
                                                           long long* __restrict__ idx, long long s,
                                                           float* __restrict__ mind, float* __restrict__ part_v,
                                                           long long* __restrict__ part_i,
                                                           unsigned* __restrict__ ticket, float* __restrict__ dist) {
  constexpr int G = 32 / LPR, R = 4;
  __shared__ float sv[THREADS];
  __shared__ long long si[THREADS];
  __shared__ bool last;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / LPR, sub = lane % LPR;
  const long long V = D * (long long)sizeof(T) / 16;  // 16-byte vectors per row
  const long long cur = idx[s - 1];
  const float4* xc = reinterpret_cast<const float4*>(x + cur * D);
  float bv = -1.f;
  long long bi = -1;
  const long long step = (long long)gridDim.x * WARPS * G * R;
  for (long long base = ((long long)blockIdx.x * WARPS + warp) * G * R; base < N; base += step) {
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (long long j = sub; j < V; j += LPR) {
      const float4 c = __ldg(xc + j);
      float4 a[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const long long i = base + r * G + g;
        a[r] = i < N ? __ldcs(reinterpret_cast<const float4*>(x + i * D) + j) : c;  // past N: distance 0, unused
      }
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] += d2_16B<T>(a[r], c);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int o = LPR / 2; o > 0; o /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const long long i = base + r * G + g;
      if (i < N) {
        const float m = fminf(mind[i], acc[r]);
        if (sub == 0) mind[i] = m;
        if (m > bv) {
          bv = m;
          bi = i;
        }
      }
    }
  }
  finish_step(sv, si, last, bv, bi, part_v, part_i, ticket, idx, s, dist);
}

template <class T>
int check_impl(const T* x, long long N, long long D, cudaStream_t st) {
  int dev = 0, sms = 1;
  EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  Scratch bad_buf(st);
  int* bad = bad_buf.alloc<int>(1);
  EDGEAD_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), st));
  const long long total = N * D;
  const unsigned chk_blocks =
      (unsigned)std::max<long long>(1, std::min<long long>((total + THREADS - 1) / THREADS, 8LL * sms));
  nonfinite_kernel<T><<<chk_blocks, THREADS, 0, st>>>(x, total, bad);
  EDGEAD_CUDA_CHECK_LAUNCH();
  int bad_host = 0;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&bad_host, bad, sizeof(int), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
  return bad_host ? CORESET_NONFINITE : CORESET_OK;
}

void init_impl(long long N, long long start, float* mind, long long* idx, float* dist, cudaStream_t st) {
  int dev = 0, sms = 1;
  EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const unsigned blocks = (unsigned)std::max<long long>(1, std::min<long long>((N + THREADS - 1) / THREADS, 4LL * sms));
  init_kernel<<<blocks, THREADS, 0, st>>>(mind, N, idx, start, dist);
  EDGEAD_CUDA_CHECK_LAUNCH();
}

template <class T>
void steps_impl(const T* x, long long N, long long D, long long s0, long long s1, float* mind, long long* idx,
                float* dist, cudaStream_t st) {
  if (s0 < 1 || s1 <= s0) return;
  int dev = 0, sms = 1;
  EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const unsigned blocks = (unsigned)std::max<long long>(1, std::min<long long>((N + WARPS - 1) / WARPS, 8LL * sms));
  Scratch pv(st), pi(st), tk(st);
  float* part_v = pv.alloc<float>(blocks);
  long long* part_i = pi.alloc<long long>(blocks);
  unsigned* ticket = tk.alloc<unsigned>(1);
  EDGEAD_CUDA_CHECK(cudaMemsetAsync(ticket, 0, sizeof(unsigned), st));
  // 16-byte rows: the vectorised step (see the top of the file), lanes per row from the row's vectors.
  const long long V = (D * (long long)sizeof(T)) % 16 == 0 ? D * (long long)sizeof(T) / 16 : 0;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int lpr = !aligned || V < 8 ? 0 : V >= 32 ? 32 : V >= 16 ? 16 : 8;
  for (long long s = s0; s < s1; ++s) {
    if (lpr == 32)
      step_vec_kernel<T, 32><<<blocks, THREADS, 0, st>>>(x, N, D, idx, s, mind, part_v, part_i, ticket, dist);
    else if (lpr == 16)
      step_vec_kernel<T, 16><<<blocks, THREADS, 0, st>>>(x, N, D, idx, s, mind, part_v, part_i, ticket, dist);
    else if (lpr == 8)
      step_vec_kernel<T, 8><<<blocks, THREADS, 0, st>>>(x, N, D, idx, s, mind, part_v, part_i, ticket, dist);
    else
      step_kernel<T><<<blocks, THREADS, 0, st>>>(x, N, D, idx, s, mind, part_v, part_i, ticket, dist);
    EDGEAD_CUDA_CHECK_LAUNCH();
  }
}

template <class T>
int coreset_cuda_impl(const T* x, long long N, long long D, long long n, long long start, long long* idx, float* dist,
                      cudaStream_t st) {
  if (check_impl(x, N, D, st) != CORESET_OK) return CORESET_NONFINITE;
  Scratch md(st);
  float* mind = md.alloc<float>(N);
  init_impl(N, start, mind, idx, dist, st);
  steps_impl(x, N, D, 1, n, mind, idx, dist, st);
  return CORESET_OK;
}

}  // namespace

int coreset_cuda(const void* features, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                 float* out_dist, std::uintptr_t stream) {
  long long* idx = reinterpret_cast<long long*>(out_idx);
  if (fp16)
    return coreset_cuda_impl(static_cast<const __half*>(features), N, D, n, start, idx, out_dist, as_stream(stream));
  return coreset_cuda_impl(static_cast<const float*>(features), N, D, n, start, idx, out_dist, as_stream(stream));
}

int coreset_cuda_check(const void* features, bool fp16, int64_t N, int64_t D, std::uintptr_t stream) {
  if (fp16) return check_impl(static_cast<const __half*>(features), N, D, as_stream(stream));
  return check_impl(static_cast<const float*>(features), N, D, as_stream(stream));
}

void coreset_cuda_init(int64_t N, int64_t start, float* min_d2, int64_t* out_idx, float* out_dist,
                       std::uintptr_t stream) {
  init_impl(N, start, min_d2, reinterpret_cast<long long*>(out_idx), out_dist, as_stream(stream));
}

void coreset_cuda_steps(const void* features, bool fp16, int64_t N, int64_t D, int64_t s0, int64_t s1, float* min_d2,
                        int64_t* out_idx, float* out_dist, std::uintptr_t stream) {
  long long* idx = reinterpret_cast<long long*>(out_idx);
  if (fp16)
    steps_impl(static_cast<const __half*>(features), N, D, s0, s1, min_d2, idx, out_dist, as_stream(stream));
  else
    steps_impl(static_cast<const float*>(features), N, D, s0, s1, min_d2, idx, out_dist, as_stream(stream));
}

}  // namespace edgead

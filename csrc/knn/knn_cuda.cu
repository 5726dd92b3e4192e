// knn on CUDA. Simple and deliberately obvious (fp32 accumulation; fp32 inputs on the SIMT cores, fp16
// inputs on the tensor cores through WMMA on sm_70+, else upcast on load to the SIMT kernel):
//   1. row squared norms (one warp per row) for the queries, and for the bank unless given;
//   2. tiled distance kernel: a block owns 64 queries and one contiguous range of bank tiles ("split"
//      over bank rows, so batch-1 inputs still fill the GPU); per 64x64 tile it accumulates q.b over D
//      through shared-memory tiles (each thread a 4x4 register tile), turns the tile into
//      max(|q|^2 - 2 q.b + |b|^2, 0) and folds it into a per-query top-k kept in shared memory;
//   3. one block per query: merge the splits' sorted lists (ties -> lowest index), recompute the
//      winners' distances directly as sqrt(sum (q - b)^2) and sort them by (distance, index).
// The Q x M matrix never exists; temporaries are O(splits * Q * k).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "common/cuda_check.cuh"
#include "knn/knn.h"

namespace edgead {
namespace {

constexpr int BQ = 64, BM = 64, BK = 16, THREADS = 256;

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __half* p) { return __half2float(*p); }

__device__ __forceinline__ bool before(float da, long long ia, float db, long long ib) {
  if (da < db) return true;
  if (db < da) return false;
  if (ia < 0) return false;
  if (ib < 0) return true;
  return ia < ib;
}

template <class T>
__global__ void sq_norms_kernel(const T* __restrict__ x, long long N, long long D, float* __restrict__ out) {
  const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= N) return;
  const T* row = x + warp * D;
  float s = 0.f;
  for (long long d = lane; d < D; d += 32) {
    const float v = ld(row + d);
    s = fmaf(v, v, s);
  }
  for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) out[warp] = s;
}

// Folds one tile row of BM squared distances (bank rows m0..m0+BM, in ascending order) into a sorted
// top-k list; '<' keeps the lowest index on ties. Out-of-range columns hold +inf and never enter.
// Indices are int32 in shared memory (the host guarantees M <= INT_MAX) so that the top-k lists for k = 64
// fit next to the static tiles in sm_75's 64 KiB of shared memory per block.
__device__ __forceinline__ void fold_row(const float* row, float* td, int* ti, int k, long long m0) {
  float worst = td[k - 1];
  for (int c = 0; c < BM; ++c) {
    const float d2 = row[c];
    if (d2 < worst) {
      int pos = k - 1;
      while (pos > 0 && td[pos - 1] > d2) {
        td[pos] = td[pos - 1];
        ti[pos] = ti[pos - 1];
        --pos;
      }
      td[pos] = d2;
      ti[pos] = (int)(m0 + c);
      worst = td[k - 1];
    }
  }
}

// Writes a block's per-query top-k lists (BQ queries from q0) to this bank split's partial results.
__device__ __forceinline__ void store_partial(const float* topd, const int* topi, long long q0, long long Q, int k,
                                              long long split, int tid, float* __restrict__ part_d,
                                              long long* __restrict__ part_i) {
  for (int e = tid; e < BQ * k; e += THREADS) {
    const long long qrow = q0 + e / k;
    if (qrow < Q) {
      const long long o = (split * Q + qrow) * k + e % k;
      part_d[o] = topd[e];
      part_i[o] = topi[e];
    }
  }
}

template <class T>
__global__ void __launch_bounds__(THREADS) knn_tile_kernel(const T* __restrict__ Qm, const T* __restrict__ Bm,
                                                           const float* __restrict__ qn, const float* __restrict__ bn,
                                                           long long Q, long long M, long long D, int k,
                                                           long long tiles_per_split, float* __restrict__ part_d,
                                                           long long* __restrict__ part_i) {
  __shared__ float As[BK][BQ + 1];
  __shared__ float Bs[BK][BM + 1];
  __shared__ float S[BQ][BM + 1];
  extern __shared__ unsigned char smem_raw[];
  float* topd = reinterpret_cast<float*>(smem_raw);                       // BQ * k
  int* topi = reinterpret_cast<int*>(smem_raw + sizeof(float) * BQ * k);  // BQ * k

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const long long q0 = (long long)blockIdx.x * BQ;
  const long long split = blockIdx.y;
  const long long btiles = (M + BM - 1) / BM;
  const long long t_begin = split * tiles_per_split;
  const long long t_end = min(btiles, t_begin + tiles_per_split);

  for (int i = tid; i < BQ * k; i += THREADS) {
    topd[i] = __int_as_float(0x7f800000);  // +inf
    topi[i] = -1;
  }

  for (long long t = t_begin; t < t_end; ++t) {
    const long long m0 = t * BM;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

    for (long long d0 = 0; d0 < D; d0 += BK) {
      __syncthreads();
      for (int e = tid; e < BQ * BK; e += THREADS) {
        const int r = e / BK, kk = e % BK;
        const long long qrow = q0 + r, brow = m0 + r, d = d0 + kk;
        As[kk][r] = (qrow < Q && d < D) ? ld(Qm + qrow * D + d) : 0.f;
        Bs[kk][r] = (brow < M && d < D) ? ld(Bm + brow * D + d) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = ty + 16 * i, c = tx + 16 * j;
        const long long qrow = q0 + r, brow = m0 + c;
        float d2 = __int_as_float(0x7f800000);
        if (qrow < Q && brow < M) d2 = fmaxf(qn[qrow] + bn[brow] - 2.f * acc[i][j], 0.f);
        S[r][c] = d2;
      }
    __syncthreads();
    if (tid < BQ) fold_row(&S[tid][0], topd + tid * k, topi + tid * k, k, m0);
  }
  __syncthreads();
  store_partial(topd, topi, q0, Q, k, split, tid, part_d, part_i);
}

// fp16 inputs: the same block structure, with q.b on the tensor cores (WMMA 16x16x16, fp16 inputs,
// fp32 accumulation). 8 warps; warp w owns output rows 16*(w/2).. and columns 32*(w%2).. (2 fragments).
// Shared tiles are row-major [row][KB + 8] halves (the pad keeps ldm a multiple of 8 and staggers banks);
// the bank tile read as col_major is exactly bank^T. Dot products go to S, then become distances.
constexpr int KB = 32, KBP = KB + 8, SP = BM + 4;

__global__ void __launch_bounds__(THREADS) knn_tile_wmma_kernel(const __half* __restrict__ Qm,
                                                                const __half* __restrict__ Bm,
                                                                const float* __restrict__ qn,
                                                                const float* __restrict__ bn, long long Q, long long M,
                                                                long long D, int k, long long tiles_per_split,
                                                                float* __restrict__ part_d,
                                                                long long* __restrict__ part_i) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  using namespace nvcuda;
  __shared__ __align__(32) __half As[BQ][KBP];
  __shared__ __align__(32) __half Bs[BM][KBP];
  __shared__ __align__(32) float S[BQ][SP];
  extern __shared__ unsigned char smem_raw[];
  float* topd = reinterpret_cast<float*>(smem_raw);
  int* topi = reinterpret_cast<int*>(smem_raw + sizeof(float) * BQ * k);

  const int tid = threadIdx.x, warp = tid / 32;
  const int wr = 16 * (warp / 2), wc = 32 * (warp % 2);
  const long long q0 = (long long)blockIdx.x * BQ;
  const long long split = blockIdx.y;
  const long long btiles = (M + BM - 1) / BM;
  const long long t_begin = split * tiles_per_split;
  const long long t_end = min(btiles, t_begin + tiles_per_split);
  const __half zero = __float2half(0.f);

  for (int i = tid; i < BQ * k; i += THREADS) {
    topd[i] = __int_as_float(0x7f800000);
    topi[i] = -1;
  }

  for (long long t = t_begin; t < t_end; ++t) {
    const long long m0 = t * BM;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc0, acc1;
    wmma::fill_fragment(acc0, 0.f);
    wmma::fill_fragment(acc1, 0.f);
    for (long long d0 = 0; d0 < D; d0 += KB) {
      __syncthreads();
      for (int e = tid; e < BQ * KB; e += THREADS) {
        const int r = e / KB, kk = e % KB;
        const long long qrow = q0 + r, brow = m0 + r, d = d0 + kk;
        As[r][kk] = (qrow < Q && d < D) ? Qm[qrow * D + d] : zero;
        Bs[r][kk] = (brow < M && d < D) ? Bm[brow * D + d] : zero;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < KB; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b0, b1;
        wmma::load_matrix_sync(a, &As[wr][kk], KBP);
        wmma::load_matrix_sync(b0, &Bs[wc][kk], KBP);
        wmma::load_matrix_sync(b1, &Bs[wc + 16][kk], KBP);
        wmma::mma_sync(acc0, a, b0, acc0);
        wmma::mma_sync(acc1, a, b1, acc1);
      }
    }
    wmma::store_matrix_sync(&S[wr][wc], acc0, SP, wmma::mem_row_major);
    wmma::store_matrix_sync(&S[wr][wc + 16], acc1, SP, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BQ * BM; e += THREADS) {
      const int r = e / BM, c = e % BM;
      const long long qrow = q0 + r, brow = m0 + c;
      S[r][c] = (qrow < Q && brow < M) ? fmaxf(qn[qrow] + bn[brow] - 2.f * S[r][c], 0.f) : __int_as_float(0x7f800000);
    }
    __syncthreads();
    if (tid < BQ) fold_row(&S[tid][0], topd + tid * k, topi + tid * k, k, m0);
  }
  __syncthreads();
  store_partial(topd, topi, q0, Q, k, split, tid, part_d, part_i);
#endif
}

// One block per query: merge `splits` sorted lists, refine the k winners' distances, sort, write.
template <class T>
__global__ void knn_finish_kernel(const T* __restrict__ Qm, const T* __restrict__ Bm, long long Q, long long D, int k,
                                  int splits, const float* __restrict__ part_d, const long long* __restrict__ part_i,
                                  float* __restrict__ out_d, long long* __restrict__ out_i) {
  extern __shared__ unsigned char smem_raw[];
  long long* sel_i = reinterpret_cast<long long*>(smem_raw);       // k
  float* sel_d = reinterpret_cast<float*>(sel_i + k);              // k
  int* heads = reinterpret_cast<int*>(sel_d + k);                  // splits
  const long long q = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int s = 0; s < splits; ++s) heads[s] = 0;
    for (int j = 0; j < k; ++j) {
      int best = -1;
      float bd = 0.f;
      long long bi = -1;
      for (int s = 0; s < splits; ++s) {
        if (heads[s] >= k) continue;
        const long long o = ((long long)s * Q + q) * k + heads[s];
        const float d = part_d[o];
        const long long i = part_i[o];
        if (i < 0) continue;
        if (best < 0 || before(d, i, bd, bi)) {
          best = s;
          bd = d;
          bi = i;
        }
      }
      if (best >= 0) heads[best]++;
      sel_i[j] = bi;
    }
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  for (int j = warp; j < k; j += nwarps) {
    const long long b = sel_i[j];
    float s = 0.f;
    if (b >= 0)
      for (long long d = lane; d < D; d += 32) {
        const float t = ld(Qm + q * D + d) - ld(Bm + b * D + d);
        s = fmaf(t, t, s);
      }
    for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);
    if (lane == 0) sel_d[j] = b >= 0 ? sqrtf(s) : __int_as_float(0x7f800000);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int j = 1; j < k; ++j) {  // insertion sort by (distance, index)
      const float d = sel_d[j];
      const long long i = sel_i[j];
      int p = j;
      while (p > 0 && before(d, i, sel_d[p - 1], sel_i[p - 1])) {
        sel_d[p] = sel_d[p - 1];
        sel_i[p] = sel_i[p - 1];
        --p;
      }
      sel_d[p] = d;
      sel_i[p] = i;
    }
    for (int j = 0; j < k; ++j) {
      out_d[q * k + j] = sel_d[j];
      out_i[q * k + j] = sel_i[j];
    }
  }
}

template <class T>
void launch_sq_norms(const T* x, long long N, long long D, float* out, cudaStream_t s) {
  const int threads = 256, rows_per_block = threads / 32;
  sq_norms_kernel<T><<<ceil_div(N, rows_per_block), threads, 0, s>>>(x, N, D, out);
  EDGEAD_CUDA_CHECK_LAUNCH();
}

template <class T>
void knn_cuda_impl(const T* Qm, const T* Bm, const float* bank_sq_norms, long long Q, long long M, long long D, int k,
                   float* out_d, long long* out_i, cudaStream_t s) {
  if (M > INT_MAX) throw std::invalid_argument("knn: CUDA bank rows M must be <= 2^31 - 1");
  int dev = 0, sms = 1;
  EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const long long qtiles = (Q + BQ - 1) / BQ, btiles = (M + BM - 1) / BM;
  long long splits = std::max<long long>(1, (2LL * sms + qtiles - 1) / qtiles);
  splits = std::min<long long>(splits, std::min<long long>(btiles, k > 16 ? 64 : 256));
  const long long tiles_per_split = (btiles + splits - 1) / splits;
  splits = (btiles + tiles_per_split - 1) / tiles_per_split;  // no empty splits

  float* qn = nullptr;
  float* bn_tmp = nullptr;
  float* part_d = nullptr;
  long long* part_i = nullptr;
  EDGEAD_CUDA_CHECK(cudaMallocAsync(&qn, sizeof(float) * Q, s));
  EDGEAD_CUDA_CHECK(cudaMallocAsync(&part_d, sizeof(float) * splits * Q * k, s));
  EDGEAD_CUDA_CHECK(cudaMallocAsync(&part_i, sizeof(long long) * splits * Q * k, s));
  launch_sq_norms(Qm, Q, D, qn, s);
  const float* bn = bank_sq_norms;
  if (!bn) {
    EDGEAD_CUDA_CHECK(cudaMallocAsync(&bn_tmp, sizeof(float) * M, s));
    launch_sq_norms(Bm, M, D, bn_tmp, s);
    bn = bn_tmp;
  }
  const size_t smem = (sizeof(float) + sizeof(int)) * BQ * k;  // topd + topi
  dim3 grid((unsigned)qtiles, (unsigned)splits);
  int major = 0;
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  bool launched = false;
  if constexpr (std::is_same<T, __half>::value) {
    if (major >= 7) {  // tensor cores
      EDGEAD_CUDA_CHECK(
          cudaFuncSetAttribute(knn_tile_wmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      knn_tile_wmma_kernel<<<grid, THREADS, smem, s>>>(Qm, Bm, qn, bn, Q, M, D, k, tiles_per_split, part_d, part_i);
      EDGEAD_CUDA_CHECK_LAUNCH();
      launched = true;
    }
  }
  if (!launched) {
    EDGEAD_CUDA_CHECK(cudaFuncSetAttribute(knn_tile_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    knn_tile_kernel<T><<<grid, THREADS, smem, s>>>(Qm, Bm, qn, bn, Q, M, D, k, tiles_per_split, part_d, part_i);
    EDGEAD_CUDA_CHECK_LAUNCH();
  }
  const size_t smem2 = (sizeof(long long) + sizeof(float)) * k + sizeof(int) * splits + 16;
  knn_finish_kernel<T><<<(unsigned)Q, 128, smem2, s>>>(Qm, Bm, Q, D, k, (int)splits, part_d, part_i, out_d, out_i);
  EDGEAD_CUDA_CHECK_LAUNCH();
  EDGEAD_CUDA_CHECK(cudaFreeAsync(qn, s));
  EDGEAD_CUDA_CHECK(cudaFreeAsync(part_d, s));
  EDGEAD_CUDA_CHECK(cudaFreeAsync(part_i, s));
  if (bn_tmp) EDGEAD_CUDA_CHECK(cudaFreeAsync(bn_tmp, s));
}

}  // namespace

void sq_norms_cuda(const void* x, bool fp16, int64_t N, int64_t D, float* out, std::uintptr_t stream) {
  if (fp16)
    launch_sq_norms(static_cast<const __half*>(x), N, D, out, as_stream(stream));
  else
    launch_sq_norms(static_cast<const float*>(x), N, D, out, as_stream(stream));
}

void knn_cuda(const void* queries, const void* bank, bool fp16, const float* bank_sq_norms, int64_t Q, int64_t M,
              int64_t D, int k, float* out_dist, int64_t* out_idx, std::uintptr_t stream) {
  long long* oi = reinterpret_cast<long long*>(out_idx);
  if (fp16)
    knn_cuda_impl(static_cast<const __half*>(queries), static_cast<const __half*>(bank), bank_sq_norms, Q, M, D, k,
                  out_dist, oi, as_stream(stream));
  else
    knn_cuda_impl(static_cast<const float*>(queries), static_cast<const float*>(bank), bank_sq_norms, Q, M, D, k,
                  out_dist, oi, as_stream(stream));
}

}  // namespace edgead

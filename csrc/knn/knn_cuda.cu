// knn on CUDA. Simple and deliberately obvious (fp32 accumulation; fp32 inputs on the SIMT cores, fp16
// inputs on the tensor cores through WMMA on sm_70+, else upcast on load to the SIMT kernel):
//   1. row squared norms (one warp per row) for the queries, and for the bank unless given;
//   2. tiled distance kernel: a block owns 64 queries and one contiguous range of bank tiles ("split"
//      over bank rows, so batch-1 inputs still fill the GPU); per 64x64 tile it accumulates q.b over D
//      through shared-memory tiles (each thread a 4x4 register tile), turns the tile into
//      max(|q|^2 - 2 q.b + |b|^2, 0) and folds it into a per-query top-k kept in shared memory
//      (all 8 warps, one query row per warp at a time: see fold_tile); while loading the tiles it
//      flags NaN/inf in the queries and the bank (no extra pass over memory);
//   3. one block per query: warp 0 merges the splits' sorted lists with a warp-level k-way merge
//      (ties -> lowest index), all warps recompute the winners' distances directly as
//      sqrt(sum (q - b)^2), and every thread ranks one winner by (distance, index) and writes it.
// GEMM path (large problems when cuBLAS can be loaded, see knn_path below): step 2 becomes a cuBLAS product
// G = -2 Q.B^T per chunk of queries x bank rows (fp32 output; fp16 inputs on the tensor cores, fp32
// accumulation, no TF32) into an L2-sized scratch, and knn_fold_gemm_kernel turns each 64x64 piece of G
// into max(|q|^2 + |b|^2 + G, 0) and folds it with the same fold_tile into per-split top-k lists that carry
// over from chunk to chunk; step 3 is unchanged (exact distances for the winners). The non-finite check
// there reads the squared norms and G (a NaN/inf element makes its row's norm and its row or column of G
// non-finite; a row whose squared norm overflows float32 is reported the same way), which the fold reads
// anyway. Measured on an H200 (bench/results), the fused tile kernel
// below reached ~22 TFLOP/s fp16 / ~13 fp32, slower than torch.cdist; cuBLAS is what dense products need.
// The host reads the non-finite flag after the launches (one 4-byte copy and a stream sync) and
// reports it like the CPU path (ValueError); inside CUDA graph capture the check is skipped.
// The Q x M matrix never exists; temporaries are O(splits * Q * k), edgead::Scratch (freed on every
// path, also when a launch check throws).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/cublas_gemm.h"
#include "common/cuda_check.cuh"
#include "common/cuda_scratch.cuh"
#include "knn/knn.h"

namespace edgead {
namespace {

constexpr int BQ = 64, BM = 64, BK = 16, THREADS = 256;
constexpr int SPS = BM + 16;
// Launch bounds of the tile kernels. With only the block size given, ptxas (CUDA 13) settles on 64
// registers for sm_87 (Jetson Orin) and spills the 4x4 accumulators / fold state there (8-16 bytes; the
// fp16 SIMT kernel already did before the fold rewrite), see tests/test_cuda_resources.py. On sm_87 the
// kernels therefore ask for two resident 256-thread blocks per SM (<= 128 registers): no spills. Other
// architectures keep ptxas' choice (sm_75: 84-96, sm_90: 61-64 registers, no spills); giving them a
// minimum of 1-2 blocks would raise sm_90 to ~105 registers and halve its resident blocks.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 870
#define KNN_TILE_BOUNDS __launch_bounds__(THREADS, 2)
#else
#define KNN_TILE_BOUNDS __launch_bounds__(THREADS)
#endif  // SIMT distance tile row stride (floats), see knn_tile_kernel

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

constexpr unsigned kFull = 0xffffffffu;

// Number of entries of the sorted list td[0..k) that are <= v (upper bound).
__device__ __forceinline__ int count_le(const float* td, int k, float v) {
  int lo = 0, hi = k;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (td[mid] <= v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Folds the tile's BQ rows of BM squared distances (row r: bank rows m0..m0+BM-1 in column order,
// +inf for columns past M) into the per-query sorted top-k lists (td, ti: k per row, ascending by
// (distance, index); int32 indices: the host guarantees M <= INT_MAX, and the lists for k = 64 then fit
// next to the static tiles in sm_75's 64 KiB of shared memory per block).
// Every warp of the block works: warp w takes rows w, w + 8, ...; lane l looks at columns l and l + 32
// and, for k > 32, the list holds positions l and l + 32 in registers (k <= kKnnCudaMaxK = 64).
//   - candidates are the columns with d2 < the row's current k-th distance (strict: on a tie the list's
//     entry has the lower bank index); a warp ballot skips rows without any (the common case once the
//     lists are warm);
//   - otherwise the new list is the first k of the merge of the old list and the candidates, computed by
//     rank: an old entry moves down by the number of candidates strictly closer; a candidate lands at
//     (old entries <= it) + (candidates before it by (distance, column)). The warp visits the candidates
//     once in column order (one shuffle each); every lane then writes its own entries to their final
//     positions (a permutation of 0..k-1, so the in-place write after __syncwarp is race-free).
// Before: one thread per row (64 of 256 threads) inserted the 64 columns one by one.
__device__ __forceinline__ void fold_tile(const float* S, int ldS, float* topd, int* topi, int k, long long m0,
                                          int warp, int lane) {
  const float inf = __int_as_float(0x7f800000);
  for (int r = warp; r < BQ; r += THREADS / 32) {
    const float* row = S + r * ldS;
    float* td = topd + r * k;
    int* ti = topi + r * k;
    const float c0 = row[lane], c1 = row[lane + 32];
    const float worst = td[k - 1];
    const unsigned lo = __ballot_sync(kFull, c0 < worst), hi = __ballot_sync(kFull, c1 < worst);
    if ((lo | hi) == 0u) continue;  // warp-uniform
    const int p0 = lane, p1 = lane + 32;
    const float od0 = p0 < k ? td[p0] : inf, od1 = p1 < k ? td[p1] : inf;
    const int oi0 = p0 < k ? ti[p0] : -1, oi1 = p1 < k ? ti[p1] : -1;
    int sh0 = 0, sh1 = 0, rc0 = 0, rc1 = 0;
    unsigned long long mask = ((unsigned long long)hi << 32) | lo;
    while (mask) {  // warp-uniform: every lane holds the same mask
      const int c = __ffsll((long long)mask) - 1;
      mask &= mask - 1;
      const float y = __shfl_sync(kFull, c < 32 ? c0 : c1, c & 31);
      sh0 += y < od0;
      sh1 += y < od1;
      rc0 += (y < c0) || (y == c0 && c < p0);
      rc1 += (y < c1) || (y == c1 && c < p1);
    }
    const int nc0 = ((lo >> lane) & 1u) ? rc0 + count_le(td, k, c0) : k;
    const int nc1 = ((hi >> lane) & 1u) ? rc1 + count_le(td, k, c1) : k;
    __syncwarp();  // every lane has read the old list
    if (p0 < k && p0 + sh0 < k) {
      td[p0 + sh0] = od0;
      ti[p0 + sh0] = oi0;
    }
    if (p1 < k && p1 + sh1 < k) {
      td[p1 + sh1] = od1;
      ti[p1 + sh1] = oi1;
    }
    if (nc0 < k) {
      td[nc0] = c0;
      ti[nc0] = (int)(m0 + p0);
    }
    if (nc1 < k) {
      td[nc1] = c1;
      ti[nc1] = (int)(m0 + p1);
    }
    __syncwarp();
  }
}

// Ors the block's non-finite findings into *flag (bit 0: queries, bit 1: bank). Block-uniform call.
__device__ __forceinline__ void report_nonfinite(int* flag, bool bad_q, bool bad_b) {
  if (!flag) return;
  const int bq = __syncthreads_or(bad_q), bb = __syncthreads_or(bad_b);
  if (threadIdx.x == 0 && (bq || bb)) atomicOr(flag, (bq ? 1 : 0) | (bb ? 2 : 0));
}

__device__ __forceinline__ bool nonfinite_half(__half h) { return (__half_as_ushort(h) & 0x7c00u) == 0x7c00u; }

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
__global__ void KNN_TILE_BOUNDS knn_tile_kernel(const T* __restrict__ Qm, const T* __restrict__ Bm,
                                                           const float* __restrict__ qn, const float* __restrict__ bn,
                                                           long long Q, long long M, long long D, int k,
                                                           long long tiles_per_split, float* __restrict__ part_d,
                                                           long long* __restrict__ part_i, int* __restrict__ flag) {
  __shared__ float As[BK][BQ + 1];
  __shared__ float Bs[BK][BM + 1];
  // Row stride BM + 16 (= 16 mod 32 words): the 4x4-tile write-out S[ty + 16i][tx + 16j] puts the two
  // half-warps (ty even / odd) on opposite bank halves, conflict-free (stride BM + 1 was 2-way); the
  // fold reads whole rows (lane-consecutive), conflict-free for any stride.
  __shared__ float S[BQ][SPS];
  extern __shared__ unsigned char smem_raw[];
  float* topd = reinterpret_cast<float*>(smem_raw);                       // BQ * k
  int* topi = reinterpret_cast<int*>(smem_raw + sizeof(float) * BQ * k);  // BQ * k

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16, warp = tid / 32, lane = tid % 32;
  bool bad_q = false, bad_b = false;
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
        const float qv = (qrow < Q && d < D) ? ld(Qm + qrow * D + d) : 0.f;
        const float bv = (brow < M && d < D) ? ld(Bm + brow * D + d) : 0.f;
        bad_q |= !isfinite(qv);
        bad_b |= !isfinite(bv);
        As[kk][r] = qv;
        Bs[kk][r] = bv;
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
    fold_tile(&S[0][0], SPS, topd, topi, k, m0, warp, lane);
  }
  report_nonfinite(flag, bad_q, bad_b);
  __syncthreads();
  store_partial(topd, topi, q0, Q, k, split, tid, part_d, part_i);
}

// fp16 inputs: the same block structure, with q.b on the tensor cores (WMMA 16x16x16, fp16 inputs,
// fp32 accumulation). 8 warps; warp w owns output rows 16*(w/2).. and columns 32*(w%2).. (2 fragments).
// Shared tiles are row-major [row][KB + 8] halves (the pad keeps ldm a multiple of 8 and staggers banks:
// row r starts at bank 20 r mod 32, so the 8 rows of each 8x8 fragment piece hit 8 disjoint 4-bank
// groups); the bank tile read as col_major is exactly bank^T. Dot products go to S, then become distances.
// S row stride SP = BM + 8 = 72 floats (= 8 mod 32 words). The accumulator store writes, per
// instruction, rows g = lane / 4 (0..7) at column pairs 2 (lane % 4): word 72 g + 2 q + {0,1} puts the
// 8 rows on disjoint 8-bank groups (g * 8), conflict-free for 32- and 64-bit stores. The old stride
// 68 (= 4 mod 32) overlapped neighbouring rows (2-way on the store) and made the old one-thread-per-row
// fold, which read S[tid][c] down a column, 4-way conflicted (banks 4 tid + c: 8 distinct per warp).
// The distance pass and the fold read rows lane-consecutively: conflict-free for any stride.
// ldm must be a multiple of 4 floats for the store, so the odd strides that would also fix a column
// read are not available.
constexpr int KB = 32, KBP = KB + 8, SP = BM + 8;
// Static shared memory of the two tile kernels (bytes; ptxas reports the same, tests/test_cuda_resources.py).
constexpr size_t kSimtStaticSmem = sizeof(float) * (2 * BK * (BQ + 1) + BQ * SPS);
constexpr size_t kWmmaStaticSmem = sizeof(__half) * 2 * BQ * KBP + sizeof(float) * BQ * SP;
constexpr size_t kFoldStaticSmem = sizeof(float) * BQ * SPS;  // knn_fold_gemm_kernel

__global__ void KNN_TILE_BOUNDS knn_tile_wmma_kernel(const __half* __restrict__ Qm,
                                                                const __half* __restrict__ Bm,
                                                                const float* __restrict__ qn,
                                                                const float* __restrict__ bn, long long Q, long long M,
                                                                long long D, int k, long long tiles_per_split,
                                                                float* __restrict__ part_d,
                                                                long long* __restrict__ part_i,
                                                                int* __restrict__ flag) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  using namespace nvcuda;
  __shared__ __align__(32) __half As[BQ][KBP];
  __shared__ __align__(32) __half Bs[BM][KBP];
  __shared__ __align__(32) float S[BQ][SP];
  extern __shared__ unsigned char smem_raw[];
  float* topd = reinterpret_cast<float*>(smem_raw);
  int* topi = reinterpret_cast<int*>(smem_raw + sizeof(float) * BQ * k);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  bool bad_q = false, bad_b = false;
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
        const __half qv = (qrow < Q && d < D) ? Qm[qrow * D + d] : zero;
        const __half bv = (brow < M && d < D) ? Bm[brow * D + d] : zero;
        bad_q |= nonfinite_half(qv);
        bad_b |= nonfinite_half(bv);
        As[r][kk] = qv;
        Bs[r][kk] = bv;
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
    fold_tile(&S[0][0], SP, topd, topi, k, m0, warp, lane);
  }
  report_nonfinite(flag, bad_q, bad_b);
  __syncthreads();
  store_partial(topd, topi, q0, Q, k, split, tid, part_d, part_i);
#endif
}

// GEMM path, step 2b: G holds -2 q.b (row-major, leading dimension ldg) for queries q_base.. q_base + Qc - 1
// and bank rows c_base.. c_base + Mc - 1. Block (x, y): 64 queries from q_base + 64 x, bank split y of this
// chunk (tiles_per_split 64-column tiles). Its top-k lists start from the split's lists of the previous
// chunk (first == false) and are written back to the same place, so a split's list covers its share of
// every chunk so far. q_base is a multiple of 64 and Qc too, except for the last query chunk.
__global__ void KNN_TILE_BOUNDS knn_fold_gemm_kernel(const float* __restrict__ G, long long ldg,
                                                     const float* __restrict__ qn, const float* __restrict__ bn,
                                                     long long Q, long long q_base, long long Qc, long long c_base,
                                                     long long Mc, int k, long long tiles_per_split, int first,
                                                     float* __restrict__ part_d, long long* __restrict__ part_i,
                                                     int* __restrict__ flag) {
  __shared__ float S[BQ][SPS];
  extern __shared__ unsigned char smem_raw[];
  float* topd = reinterpret_cast<float*>(smem_raw);
  int* topi = reinterpret_cast<int*>(smem_raw + sizeof(float) * BQ * k);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const float inf = __int_as_float(0x7f800000);
  bool bad_q = false, bad_b = false;
  const long long q0 = q_base + (long long)blockIdx.x * BQ;
  const long long q_end = min(Q, q_base + Qc);
  const long long split = blockIdx.y;
  const long long ctiles = (Mc + BM - 1) / BM;
  const long long t_begin = split * tiles_per_split;
  const long long t_end = min(ctiles, t_begin + tiles_per_split);

  for (int e = tid; e < BQ * k; e += THREADS) {
    const long long qrow = q0 + e / k;
    if (!first && qrow < q_end) {
      const long long o = (split * Q + qrow) * k + e % k;
      topd[e] = part_d[o];
      topi[e] = (int)part_i[o];
    } else {
      topd[e] = inf;
      topi[e] = -1;
    }
  }
  for (long long t = t_begin; t < t_end; ++t) {
    const long long c0 = t * BM;  // chunk-local column of the tile
    __syncthreads();              // the previous fold is done with S (and the lists are initialised)
    for (int e = tid; e < BQ * BM; e += THREADS) {
      const int r = e / BM, c = e % BM;
      const long long qrow = q0 + r, col = c0 + c;
      float d2 = inf;
      if (qrow < q_end && col < Mc) {
        const float a = qn[qrow], b = bn[c_base + col], g = G[(qrow - q_base) * ldg + col];
        // A NaN/inf element makes its row's norm non-finite and its whole G row (query) or column (bank)
        // non-finite; with finite norms |q.b| <= |q| |b| stays finite. The query norms are always computed
        // here, the bank's may be given (precomputed from a clean bank): G still shows a bad bank row.
        bad_q |= !isfinite(a);
        bad_b |= !isfinite(b) || (!isfinite(g) && isfinite(a));
        d2 = fmaxf(a + b + g, 0.f);
      }
      S[r][c] = d2;
    }
    __syncthreads();
    fold_tile(&S[0][0], SPS, topd, topi, k, c_base + c0, warp, lane);
  }
  report_nonfinite(flag, bad_q, bad_b);
  __syncthreads();
  // Rows past q_end lie past Q: only the last query chunk ends short of a whole 64-row block.
  store_partial(topd, topi, q0, Q, k, split, tid, part_d, part_i);
}

// Lane `lane`'s best head among its splits (s = lane, lane + 32, ...): (distance, index, split);
// (+inf, -1, -1) when all are exhausted. Entries with index < 0 are padding and end a list.
__device__ __forceinline__ void lane_best_head(const float* __restrict__ part_d, const long long* __restrict__ part_i,
                                               const int* heads, long long Q, long long q, int k, int splits, int lane,
                                               float& bd, long long& bi, int& bs) {
  bd = __int_as_float(0x7f800000);
  bi = -1;
  bs = -1;
  for (int s = lane; s < splits; s += 32) {
    if (heads[s] >= k) continue;
    const long long o = ((long long)s * Q + q) * k + heads[s];
    const long long i = part_i[o];
    if (i < 0) continue;
    const float d = part_d[o];
    if (bi < 0 || before(d, i, bd, bi)) {
      bd = d;
      bi = i;
      bs = s;
    }
  }
}

// One block (128 threads) per query:
//   1. warp 0 merges the `splits` sorted lists (warp-level k-way merge): each lane holds the best head
//      of its splits; per output position a 5-step shuffle arg-min picks the winner (ties -> lowest
//      bank index; splits are disjoint bank ranges, so indices are distinct) and only the owning lane
//      advances its head and rescans its <= 8 splits. Before: thread 0 alone scanned all splits for
//      each of the k positions (k * splits serial steps) while 127 threads waited.
//   2. all warps recompute the winners' distances directly, one warp per winner;
//   3. every thread j < k ranks winner j by (distance, index, position) against the k winners and
//      writes it to its sorted place (before: thread 0 insertion-sorted and wrote all k).
template <class T>
__global__ void knn_finish_kernel(const T* __restrict__ Qm, const T* __restrict__ Bm, long long Q, long long D, int k,
                                  int splits, const float* __restrict__ part_d, const long long* __restrict__ part_i,
                                  float* __restrict__ out_d, long long* __restrict__ out_i) {
  extern __shared__ unsigned char smem_raw[];
  long long* sel_i = reinterpret_cast<long long*>(smem_raw);       // k
  float* sel_d = reinterpret_cast<float*>(sel_i + k);              // k
  int* heads = reinterpret_cast<int*>(sel_d + k);                  // splits
  const long long q = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  if (warp == 0) {
    for (int s = lane; s < splits; s += 32) heads[s] = 0;  // lane-owned: no other lane touches heads[s]
    float bd;
    long long bi;
    int bs;
    lane_best_head(part_d, part_i, heads, Q, q, k, splits, lane, bd, bi, bs);
    for (int j = 0; j < k; ++j) {
      float wd = bd;
      long long wi = bi;
      int ws = bs;
      for (int o = 16; o > 0; o /= 2) {
        const float od = __shfl_xor_sync(kFull, wd, o);
        const long long oi = __shfl_xor_sync(kFull, wi, o);
        const int os = __shfl_xor_sync(kFull, ws, o);
        if (oi >= 0 && (wi < 0 || before(od, oi, wd, wi))) {
          wd = od;
          wi = oi;
          ws = os;
        }
      }
      if (lane == 0) sel_i[j] = wi;  // -1 only if fewer than k entries exist (k <= M rules it out)
      if (wi >= 0 && ws == bs && (ws & 31) == lane) {
        heads[ws]++;
        lane_best_head(part_d, part_i, heads, Q, q, k, splits, lane, bd, bi, bs);
      }
    }
  }
  __syncthreads();
  for (int j = warp; j < k; j += nwarps) {
    const long long b = sel_i[j];
    float s = 0.f;
    if (b >= 0)
      for (long long d = lane; d < D; d += 32) {
        const float t = ld(Qm + q * D + d) - ld(Bm + b * D + d);
        s = fmaf(t, t, s);
      }
    for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(kFull, s, o);
    if (lane == 0) sel_d[j] = b >= 0 ? sqrtf(s) : __int_as_float(0x7f800000);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    const float d = sel_d[j];
    const long long i = sel_i[j];
    int rank = 0;  // a permutation of 0..k-1: ties in (distance, index) fall back to the position
    for (int t = 0; t < k; ++t) {
      const float dt = sel_d[t];
      const long long it = sel_i[t];
      rank += before(dt, it, d, i) || (t < j && !before(d, i, dt, it));
    }
    out_d[q * k + rank] = d;
    out_i[q * k + rank] = i;
  }
}

template <class T>
void launch_sq_norms(const T* x, long long N, long long D, float* out, cudaStream_t s) {
  const int threads = 256, rows_per_block = threads / 32;
  sq_norms_kernel<T><<<ceil_div(N, rows_per_block), threads, 0, s>>>(x, N, D, out);
  EDGEAD_CUDA_CHECK_LAUNCH();
}

// Which step 2 runs: EDGEAD_KNN_CUDA_PATH = auto (default) | fused | gemm. auto takes the GEMM path when
// cuBLAS loads and the product is large enough for a library GEMM to pay off (Q*M*D >= 2^24 multiply-adds),
// else the fused tile kernel. gemm without cuBLAS is an error (benchmarks and tests ask for it explicitly).
enum class KnnPath { Fused, Gemm };

KnnPath knn_path(long long Q, long long M, long long D) {
  const char* env = std::getenv("EDGEAD_KNN_CUDA_PATH");
  const std::string want = env && *env ? env : "auto";
  if (want == "fused") return KnnPath::Fused;
  if (want == "gemm") {
    if (!cublas_available())
      throw std::runtime_error("knn: EDGEAD_KNN_CUDA_PATH=gemm needs cuBLAS: " + cublas_status());
    return KnnPath::Gemm;
  }
  if (want != "auto")
    throw std::invalid_argument("knn: environment variable EDGEAD_KNN_CUDA_PATH expected auto, fused or gemm, got '" +
                                want + "'");
  const double work = (double)Q * (double)M * (double)D;
  return work >= 16777216.0 && cublas_available() ? KnnPath::Gemm : KnnPath::Fused;
}

// Scratch for one chunk of G: EDGEAD_KNN_GEMM_BYTES (default 32 MiB, about what stays in an H100/H200's L2
// between the product and the fold; tests make it tiny to get many chunks).
long long knn_gemm_bytes() {
  const char* env = std::getenv("EDGEAD_KNN_GEMM_BYTES");
  if (!env || !*env) return 32LL << 20;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  if (!end || *end || v < 4096)
    throw std::invalid_argument(std::string("knn: environment variable EDGEAD_KNN_GEMM_BYTES expected an integer >= 4096, got '") +
                                env + "'");
  return v;
}

template <class T>
int knn_cuda_impl(const T* Qm, const T* Bm, const float* bank_sq_norms, long long Q, long long M, long long D, int k,
                  float* out_d, long long* out_i, cudaStream_t s) {
  if (M > INT_MAX) throw std::invalid_argument("knn: CUDA bank rows M must be <= 2^31 - 1");
  // fold_tile holds two list entries per lane: k <= 64 (= kKnnCudaMaxK, checked by the binding).
  if (k < 1 || k > 64) throw std::invalid_argument("knn: CUDA k must be in [1, 64]");
  int dev = 0, sms = 1;
  EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const KnnPath path = knn_path(Q, M, D);
  const long long qtiles = (Q + BQ - 1) / BQ, btiles = (M + BM - 1) / BM;
  // GEMM path chunks: Qc queries (a multiple of BQ, <= 8192) x Mc bank rows (a multiple of BM) of fp32 G.
  const long long gemm_bytes = path == KnnPath::Gemm ? knn_gemm_bytes() : 0;
  long long Qc = 0, Mc = 0;
  if (path == KnnPath::Gemm) {
    Qc = std::min<long long>(8192, std::max<long long>(BQ, gemm_bytes / (4LL * 4 * BM) / BQ * BQ));
    if (Q <= Qc) Qc = Q;
    Mc = std::max<long long>(BM, gemm_bytes / (4LL * Qc) / BM * BM);
    Mc = std::min<long long>(Mc, btiles * BM);
  }
  const long long qtiles_c = path == KnnPath::Gemm ? (Qc + BQ - 1) / BQ : qtiles;
  const long long tiles_c = path == KnnPath::Gemm ? Mc / BM : btiles;  // bank tiles one launch covers
  long long splits = std::max<long long>(1, ((path == KnnPath::Gemm ? 4LL : 2LL) * sms + qtiles_c - 1) / qtiles_c);
  splits = std::min<long long>(splits, std::min<long long>(tiles_c, k > 16 ? 64 : 256));
  const long long tiles_per_split = (tiles_c + splits - 1) / splits;
  splits = (tiles_c + tiles_per_split - 1) / tiles_per_split;  // no empty splits (in a full chunk)

  // The non-finite check needs a host read; a stream being captured into a CUDA graph cannot sync,
  // so there the check is skipped (documented in edgead.ops.knn).
  const bool check = !stream_capturing(s);

  Scratch qn_buf(s), pd_buf(s), pi_buf(s), bn_buf(s), flag_buf(s);
  float* qn = qn_buf.alloc<float>((size_t)Q);
  float* part_d = pd_buf.alloc<float>((size_t)(splits * Q * k));
  long long* part_i = pi_buf.alloc<long long>((size_t)(splits * Q * k));
  int* flag = nullptr;
  if (check) {
    flag = flag_buf.alloc<int>(1);
    EDGEAD_CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), s));
  }
  launch_sq_norms(Qm, Q, D, qn, s);
  const float* bn = bank_sq_norms;
  if (!bn) {
    float* bn_tmp = bn_buf.alloc<float>((size_t)M);
    launch_sq_norms(Bm, M, D, bn_tmp, s);
    bn = bn_tmp;
  }
  const size_t smem = (sizeof(float) + sizeof(int)) * BQ * k;  // topd + topi
  dim3 grid((unsigned)qtiles, (unsigned)splits);
  int major = 0, optin = 0;
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  EDGEAD_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const bool wmma = std::is_same<T, __half>::value && major >= 7;  // tensor cores
  // Static tiles + the top-k lists must fit one block's shared memory: always on sm_70+ (>= 96 KiB
  // opt-in), but GPUs with 48 KiB per block (sm_6x: the fp16 SIMT path) hold k <= 39 only.
  const size_t static_smem = path == KnnPath::Gemm ? kFoldStaticSmem : wmma ? kWmmaStaticSmem : kSimtStaticSmem;
  if (static_smem + smem > (size_t)optin) {
    const long long kmax = ((long long)optin - (long long)static_smem) / (long long)((sizeof(float) + sizeof(int)) * BQ);
    throw std::invalid_argument("knn: argument 'k' expected k <= " + std::to_string(kmax) + " on this GPU (" +
                                std::to_string(optin) + " bytes of shared memory per block), got k = " +
                                std::to_string(k));
  }
  if (path == KnnPath::Gemm) {
    // The fold kernel holds only S and the lists: it fits wherever the fused kernel does.
    EDGEAD_CUDA_CHECK(cudaFuncSetAttribute(knn_fold_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    Scratch g_buf(s);
    float* G = g_buf.alloc<float>((size_t)(Qc * Mc));
    for (long long qb = 0; qb < Q; qb += Qc) {
      const long long qn_rows = std::min(Qc, Q - qb);
      for (long long cb = 0; cb < M; cb += Mc) {
        const long long mc = std::min(Mc, M - cb);
        if (!gemm_abt(std::is_same<T, __half>::value, qn_rows, mc, D, -2.f, Qm + qb * D, D, Bm + cb * D, D, G, Mc, s))
          throw std::runtime_error("knn: cuBLAS became unavailable: " + cublas_status());
        const long long ctiles = (mc + BM - 1) / BM;
        const long long tps = (ctiles + splits - 1) / splits;  // same split count in every chunk
        dim3 g((unsigned)((qn_rows + BQ - 1) / BQ), (unsigned)splits);
        knn_fold_gemm_kernel<<<g, THREADS, smem, s>>>(G, Mc, qn, bn, Q, qb, qn_rows, cb, mc, k, tps, cb == 0 ? 1 : 0,
                                                      part_d, part_i, flag);
        EDGEAD_CUDA_CHECK_LAUNCH();
      }
    }
  } else if constexpr (std::is_same<T, __half>::value) {
    if (wmma) {
      EDGEAD_CUDA_CHECK(
          cudaFuncSetAttribute(knn_tile_wmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      knn_tile_wmma_kernel<<<grid, THREADS, smem, s>>>(Qm, Bm, qn, bn, Q, M, D, k, tiles_per_split, part_d, part_i,
                                                       flag);
      EDGEAD_CUDA_CHECK_LAUNCH();
    }
  }
  if (path == KnnPath::Fused && !wmma) {
    EDGEAD_CUDA_CHECK(cudaFuncSetAttribute(knn_tile_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    knn_tile_kernel<T><<<grid, THREADS, smem, s>>>(Qm, Bm, qn, bn, Q, M, D, k, tiles_per_split, part_d, part_i, flag);
    EDGEAD_CUDA_CHECK_LAUNCH();
  }
  const size_t smem2 = (sizeof(long long) + sizeof(float)) * k + sizeof(int) * splits + 16;
  knn_finish_kernel<T><<<(unsigned)Q, 128, smem2, s>>>(Qm, Bm, Q, D, k, (int)splits, part_d, part_i, out_d, out_i);
  EDGEAD_CUDA_CHECK_LAUNCH();
  if (!check) return KNN_OK;
  int bad = 0;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&bad, flag, sizeof(int), cudaMemcpyDeviceToHost, s));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad & 1) return KNN_NONFINITE_QUERIES;
  if (bad & 2) return KNN_NONFINITE_BANK;
  return KNN_OK;
}

}  // namespace

void sq_norms_cuda(const void* x, bool fp16, int64_t N, int64_t D, float* out, std::uintptr_t stream) {
  if (fp16)
    launch_sq_norms(static_cast<const __half*>(x), N, D, out, as_stream(stream));
  else
    launch_sq_norms(static_cast<const float*>(x), N, D, out, as_stream(stream));
}

int knn_cuda(const void* queries, const void* bank, bool fp16, const float* bank_sq_norms, int64_t Q, int64_t M,
             int64_t D, int k, float* out_dist, int64_t* out_idx, std::uintptr_t stream) {
  long long* oi = reinterpret_cast<long long*>(out_idx);
  if (fp16)
    return knn_cuda_impl(static_cast<const __half*>(queries), static_cast<const __half*>(bank), bank_sq_norms, Q, M, D, k,
                  out_dist, oi, as_stream(stream));
  return knn_cuda_impl(static_cast<const float*>(queries), static_cast<const float*>(bank), bank_sq_norms, Q, M, D, k,
                  out_dist, oi, as_stream(stream));
}

}  // namespace edgead

// PRO curve / AUPRO on the GPU.
//
// 1. validate: first non-finite score / first mask value not in {0,1} (atomicMin on the flat index);
//    count defect pixels (block-aggregated atomics).
// 2. label: per-pixel union-find over global flat indices (Playne & Hawick style): init L[p] = p for
//    defect pixels; a merge kernel unites each pixel with its W, NW, N, NE neighbours of the same image
//    through atomicMin on roots (root = smallest index of the component); a compress kernel points
//    every pixel at its root.
// 3. region ids: exclusive scan of the root flags; sizes by warp-aggregated atomics; 1/|r|.
// 4. sort: (descending score key, region + 1) with cub::DeviceRadixSort::SortPairs.
// 5. curve: inclusive scans of the false-positive increments and of the 1/|r| increments; flags on the
//    last element of every tie group; exclusive scan of the flags places the points; per-point
//    segment areas reduced with cub::DeviceReduce::Sum.
// 6. copy the point count, the area and (when asked) the curve to the host; synchronise the stream.
#include <cub/cub.cuh>
#include <math_constants.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/cuda_check.cuh"
#include "pro/pro.h"

namespace edgead {
namespace pro {
namespace {

constexpr int kBlock = 256;

// RAII temporary device buffer (stream-ordered).
template <class T>
struct DevBuf {
  T* p = nullptr;
  cudaStream_t s = nullptr;
  DevBuf(size_t count, cudaStream_t stream) : s(stream) {
    if (count == 0) count = 1;
    EDGEAD_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p), count * sizeof(T), s));
  }
  ~DevBuf() {
    if (p) cudaFreeAsync(p, s);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

__device__ __forceinline__ uint32_t desc_key(float x) {
  if (x == 0.0f) x = 0.0f;
  uint32_t u = __float_as_uint(x);
  uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~asc;
}
__device__ __forceinline__ unsigned long long desc_key(double x) {
  if (x == 0.0) x = 0.0;
  unsigned long long u = static_cast<unsigned long long>(__double_as_longlong(x));
  unsigned long long asc = (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  return ~asc;
}
__device__ __forceinline__ double key_value(uint32_t d) {
  uint32_t asc = ~d;
  uint32_t u = (asc & 0x80000000u) ? (asc & 0x7fffffffu) : ~asc;
  return static_cast<double>(__uint_as_float(u));
}
__device__ __forceinline__ double key_value(unsigned long long d) {
  unsigned long long asc = ~d;
  unsigned long long u = (asc & 0x8000000000000000ull) ? (asc & 0x7fffffffffffffffull) : ~asc;
  return __longlong_as_double(static_cast<long long>(u));
}

template <class Scalar>
__global__ void validate_kernel(const Scalar* __restrict__ s, const uint8_t* __restrict__ m, int32_t n,
                                unsigned long long* bad_score, unsigned long long* bad_mask,
                                unsigned long long* n_defect, int32_t* L) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  int fg = 0;
  if (i < n) {
    const Scalar v = s[i];
    if (!isfinite(v)) atomicMin(bad_score, static_cast<unsigned long long>(i));
    const uint8_t mv = m[i];
    if (mv > 1) atomicMin(bad_mask, static_cast<unsigned long long>(i));
    fg = mv != 0;
    L[i] = fg ? i : -1;
  }
  const int cnt = __syncthreads_count(fg);
  if (threadIdx.x == 0 && cnt) atomicAdd(n_defect, static_cast<unsigned long long>(cnt));
}

__device__ __forceinline__ int32_t find_root(const int32_t* L, int32_t x) {
  int32_t p = *((volatile const int32_t*)(L + x));
  while (p != x) {
    x = p;
    p = *((volatile const int32_t*)(L + x));
  }
  return x;
}

// Union of the trees of a and b: the larger root is linked below the smaller one with atomicMin;
// retried when another thread changed the root in between.
__device__ void unite(int32_t* L, int32_t a, int32_t b) {
  bool done = false;
  while (!done) {
    a = find_root(L, a);
    b = find_root(L, b);
    if (a == b) {
      done = true;
    } else if (a < b) {
      const int32_t old = atomicMin(L + b, a);
      done = (old == b);
      b = old;
    } else {
      const int32_t old = atomicMin(L + a, b);
      done = (old == a);
      a = old;
    }
  }
}

__global__ void merge_kernel(const uint8_t* __restrict__ m, int32_t* L, int32_t n, int32_t H, int32_t W) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n || !m[i]) return;
  const int32_t HW = H * W;
  const int32_t p = i % HW;
  const int32_t y = p / W, x = p % W;
  if (x > 0 && m[i - 1]) unite(L, i, i - 1);
  if (y > 0) {
    if (x > 0 && m[i - W - 1]) unite(L, i, i - W - 1);
    if (m[i - W]) unite(L, i, i - W);
    if (x + 1 < W && m[i - W + 1]) unite(L, i, i - W + 1);
  }
}

__global__ void compress_kernel(int32_t* L, int32_t* is_root, int32_t n) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int32_t l = L[i];
  int32_t root = 0;
  if (l >= 0) {
    int32_t x = i;
    while (L[x] != x) x = L[x];
    L[i] = x;
    root = (x == i);
  }
  is_root[i] = root;
}

// Region of every pixel (L[i] -> rid[L[i]]), sizes (warp-aggregated atomics), sort keys and values.
template <class Scalar, class Key>
__global__ void keys_kernel(const Scalar* __restrict__ s, const int32_t* __restrict__ L, const int32_t* __restrict__ rid,
                            int32_t n, Key* keys, uint32_t* vals, unsigned int* sizes) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = i < n;
  int32_t region = -1;
  if (active) {
    const int32_t l = L[i];
    region = l >= 0 ? rid[l] : -1;
    keys[i] = desc_key(s[i]);
    vals[i] = static_cast<uint32_t>(region + 1);
  }
  const unsigned ballot = __ballot_sync(0xffffffffu, active && region >= 0);
  if (active && region >= 0) {
    const unsigned peers = __match_any_sync(ballot, region);
    const int leader = __ffs(peers) - 1;
    if ((threadIdx.x & 31) == leader) atomicAdd(sizes + region, static_cast<unsigned int>(__popc(peers)));
  }
}

__global__ void inv_size_kernel(const unsigned int* sizes, double* inv, int32_t R) {
  const int32_t r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < R) inv[r] = 1.0 / static_cast<double>(sizes[r]);
}

template <class Key>
__global__ void increments_kernel(const Key* __restrict__ keys, const uint32_t* __restrict__ vals,
                                  const double* __restrict__ inv, int32_t n, int32_t* fp_inc, double* pro_inc,
                                  int32_t* last_flag) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t v = vals[i];
  fp_inc[i] = v == 0;
  pro_inc[i] = v ? inv[v - 1] : 0.0;
  last_flag[i] = (i + 1 == n) || (keys[i + 1] != keys[i]);
}

// Point j + 1 of the curve for every tie-group end; point 0 = (0, 0, +inf).
template <class Key>
__global__ void points_kernel(const Key* __restrict__ keys, const int32_t* __restrict__ fp_cum,
                              const double* __restrict__ pro_cum, const int32_t* __restrict__ last_flag,
                              const int32_t* __restrict__ pos, int32_t n, double n_normal, double inv_regions,
                              double* fpr, double* pro, double* thr) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i == 0) {
    fpr[0] = 0.0;
    pro[0] = 0.0;
    thr[0] = CUDART_INF;
  }
  if (i >= n || !last_flag[i]) return;
  const int32_t j = pos[i] + 1;
  fpr[j] = static_cast<double>(fp_cum[i]) / n_normal;  // division, bit-identical to the CPU sweep
  pro[j] = pro_cum[i] * inv_regions;
  thr[j] = key_value(keys[i]);
}

__global__ void segments_kernel(const double* __restrict__ fpr, const double* __restrict__ pro, int32_t n_points,
                                double limit, double* seg) {
  const int32_t j = blockIdx.x * blockDim.x + threadIdx.x + 1;
  if (j >= n_points) return;
  seg[j - 1] = segment_area(fpr[j - 1], pro[j - 1], fpr[j], pro[j], limit);
}

template <class Scalar, class Key>
Result run(const Scalar* scores, const uint8_t* masks, int64_t N, int64_t H, int64_t W, double limit, double* h_fpr,
           double* h_pro, double* h_thr, int64_t capacity, cudaStream_t st) {
  Result res;
  const int64_t total64 = N * H * W;
  if (total64 >= (int64_t(1) << 31) - 1) {
    res.status = kTooLarge;
    return res;
  }
  const int32_t n = static_cast<int32_t>(total64);
  const unsigned grid = ceil_div(n, kBlock);

  // 1. validation + defect count + label init.
  DevBuf<unsigned long long> counters(3, st);
  const unsigned long long init[3] = {~0ull, ~0ull, 0ull};
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(counters.p, init, sizeof(init), cudaMemcpyHostToDevice, st));
  DevBuf<int32_t> L(n, st);
  validate_kernel<Scalar><<<grid, kBlock, 0, st>>>(scores, masks, n, counters.p, counters.p + 1, counters.p + 2, L.p);
  EDGEAD_CUDA_CHECK_LAUNCH();
  unsigned long long h_counters[3];
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(h_counters, counters.p, sizeof(h_counters), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
  // Same report as the CPU: the first image holding a bad value decides; within it a non-finite
  // score takes precedence over a bad mask value.
  const unsigned long long HW = static_cast<unsigned long long>(H * W);
  const bool score_first =
      h_counters[0] != ~0ull && (h_counters[1] == ~0ull || h_counters[0] / HW <= h_counters[1] / HW);
  if (score_first) {
    Scalar v;
    EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&v, scores + h_counters[0], sizeof(Scalar), cudaMemcpyDeviceToHost, st));
    EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
    res.status = kNonFiniteScore;
    res.bad_index = static_cast<int64_t>(h_counters[0]);
    res.bad_value = static_cast<double>(v);
    return res;
  }
  if (h_counters[1] != ~0ull) {
    uint8_t v;
    EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&v, masks + h_counters[1], 1, cudaMemcpyDeviceToHost, st));
    EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
    res.status = kBadMask;
    res.bad_index = static_cast<int64_t>(h_counters[1]);
    res.bad_value = v;
    return res;
  }
  const int64_t n_defect = static_cast<int64_t>(h_counters[2]);
  res.n_normal = total64 - n_defect;
  if (n_defect == 0) {
    res.status = kNoRegions;
    return res;
  }
  if (res.n_normal == 0) {
    res.status = kNoNormal;
    return res;
  }

  // 2. labelling.
  merge_kernel<<<grid, kBlock, 0, st>>>(masks, L.p, n, static_cast<int32_t>(H), static_cast<int32_t>(W));
  EDGEAD_CUDA_CHECK_LAUNCH();
  DevBuf<int32_t> is_root(n, st);
  compress_kernel<<<grid, kBlock, 0, st>>>(L.p, is_root.p, n);
  EDGEAD_CUDA_CHECK_LAUNCH();

  // 3. region ids.
  DevBuf<int32_t> rid(n, st);
  {
    size_t bytes = 0;
    EDGEAD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, is_root.p, rid.p, n, st));
    DevBuf<unsigned char> tmp(bytes, st);
    EDGEAD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.p, bytes, is_root.p, rid.p, n, st));
  }
  int32_t last_rid = 0, last_root = 0;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&last_rid, rid.p + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&last_root, is_root.p + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
  const int32_t R = last_rid + last_root;
  res.n_regions = R;

  // 4. keys, values, sizes; sort.
  DevBuf<Key> keys_a(n, st), keys_b(n, st);
  DevBuf<uint32_t> vals_a(n, st), vals_b(n, st);
  DevBuf<unsigned int> sizes(R, st);
  EDGEAD_CUDA_CHECK(cudaMemsetAsync(sizes.p, 0, sizeof(unsigned int) * static_cast<size_t>(R), st));
  keys_kernel<Scalar, Key><<<grid, kBlock, 0, st>>>(scores, L.p, rid.p, n, keys_a.p, vals_a.p, sizes.p);
  EDGEAD_CUDA_CHECK_LAUNCH();
  DevBuf<double> inv(R, st);
  inv_size_kernel<<<ceil_div(R, kBlock), kBlock, 0, st>>>(sizes.p, inv.p, R);
  EDGEAD_CUDA_CHECK_LAUNCH();
  cub::DoubleBuffer<Key> dkeys(keys_a.p, keys_b.p);
  cub::DoubleBuffer<uint32_t> dvals(vals_a.p, vals_b.p);
  {
    size_t bytes = 0;
    EDGEAD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, dkeys, dvals, n, 0, int(sizeof(Key) * 8), st));
    DevBuf<unsigned char> tmp(bytes, st);
    EDGEAD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.p, bytes, dkeys, dvals, n, 0, int(sizeof(Key) * 8), st));
  }
  const Key* skeys = dkeys.Current();
  const uint32_t* svals = dvals.Current();

  // 5. scans and curve points. The free key/value buffers are reused as int32 scratch.
  int32_t* fp_cum = L.p;         // labels no longer needed
  int32_t* last_flag = is_root.p;
  int32_t* pos = rid.p;
  DevBuf<double> pro_cum(n, st);
  increments_kernel<Key><<<grid, kBlock, 0, st>>>(skeys, svals, inv.p, n, fp_cum, pro_cum.p, last_flag);
  EDGEAD_CUDA_CHECK_LAUNCH();
  {
    size_t b1 = 0, b2 = 0, b3 = 0;
    EDGEAD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, b1, fp_cum, fp_cum, n, st));
    EDGEAD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, b2, pro_cum.p, pro_cum.p, n, st));
    EDGEAD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, b3, last_flag, pos, n, st));
    size_t bytes = b1 > b2 ? b1 : b2;
    bytes = bytes > b3 ? bytes : b3;
    DevBuf<unsigned char> tmp(bytes, st);
    size_t b = bytes;
    EDGEAD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(tmp.p, b, fp_cum, fp_cum, n, st));
    b = bytes;
    EDGEAD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(tmp.p, b, pro_cum.p, pro_cum.p, n, st));
    b = bytes;
    EDGEAD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.p, b, last_flag, pos, n, st));
  }
  int32_t last_pos = 0, last_fl = 0;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&last_pos, pos + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&last_fl, last_flag + (n - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
  const int32_t n_points = last_pos + last_fl + 1;

  DevBuf<double> d_fpr(n_points, st), d_pro(n_points, st), d_thr(n_points, st);
  points_kernel<Key><<<grid, kBlock, 0, st>>>(skeys, fp_cum, pro_cum.p, last_flag, pos, n,
                                              static_cast<double>(res.n_normal), 1.0 / static_cast<double>(R),
                                              d_fpr.p, d_pro.p, d_thr.p);
  EDGEAD_CUDA_CHECK_LAUNCH();
  DevBuf<double> seg(n_points, st);
  DevBuf<double> d_area(1, st);
  segments_kernel<<<ceil_div(n_points > 1 ? n_points - 1 : 1, kBlock), kBlock, 0, st>>>(d_fpr.p, d_pro.p, n_points, limit,
                                                                                         seg.p);
  EDGEAD_CUDA_CHECK_LAUNCH();
  {
    size_t bytes = 0;
    EDGEAD_CUDA_CHECK(cub::DeviceReduce::Sum(nullptr, bytes, seg.p, d_area.p, n_points - 1, st));
    DevBuf<unsigned char> tmp(bytes, st);
    EDGEAD_CUDA_CHECK(cub::DeviceReduce::Sum(tmp.p, bytes, seg.p, d_area.p, n_points - 1, st));
  }
  double area = 0.0;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&area, d_area.p, sizeof(double), cudaMemcpyDeviceToHost, st));
  const bool curve = h_fpr && h_pro && h_thr;
  if (curve) {
    if (n_points > capacity) {
      EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
      res.status = kCapacity;
      res.bad_index = n_points;
      return res;
    }
    const size_t bytes = sizeof(double) * static_cast<size_t>(n_points);
    EDGEAD_CUDA_CHECK(cudaMemcpyAsync(h_fpr, d_fpr.p, bytes, cudaMemcpyDeviceToHost, st));
    EDGEAD_CUDA_CHECK(cudaMemcpyAsync(h_pro, d_pro.p, bytes, cudaMemcpyDeviceToHost, st));
    EDGEAD_CUDA_CHECK(cudaMemcpyAsync(h_thr, d_thr.p, bytes, cudaMemcpyDeviceToHost, st));
    res.n_points = n_points;
  }
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(st));
  res.aupro = area / limit;
  return res;
}

}  // namespace

Result pro_curve_cuda(const void* scores, bool is_f64, const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                      double fpr_limit, double* fpr, double* pro, double* thr, int64_t capacity, std::uintptr_t stream) {
  cudaStream_t st = as_stream(stream);
  if (is_f64)
    return run<double, unsigned long long>(static_cast<const double*>(scores), masks, n, h, w, fpr_limit, fpr, pro, thr,
                                           capacity, st);
  return run<float, uint32_t>(static_cast<const float*>(scores), masks, n, h, w, fpr_limit, fpr, pro, thr, capacity, st);
}

}  // namespace pro
}  // namespace edgead

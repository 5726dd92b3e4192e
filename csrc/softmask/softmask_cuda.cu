// FADeR soft mask on the GPU (definition: softmask.h): one kernel does normalise, flip, nearest
// scaling and the channel-broadcast multiply. Grid (blocks per image, images): every block first
// reduces min/max over its image's h*w predictions (small and L2-resident), then streams its share
// of the image's C*Hs*Ws features, 4 elements per thread-iteration when a row allows it
// (out may alias features: every element is read and then written by the same thread).
// NaN/inf in an image's predictions are found in the same min/max pass: that image's blocks then write
// nothing (as on the CPU, out is left as it was) and the lowest such image index goes to *bad_image,
// which the host reads back after the launch (one 8-byte copy + stream sync) to raise the CPU path's
// ValueError. Inside CUDA graph capture bad_image is null: no check, NaN propagates as before.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/cuda_scratch.cuh"
#include "softmask/softmask.h"

namespace edgead {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float ld(const float* p, long long i) { return __ldg(p + i); }
__device__ __forceinline__ float ld(const __half* p, long long i) { return __half2float(p[i]); }

template <int N, class F> struct alignas(N * sizeof(F)) Pack { F v[N]; };

template <class TP, class TF, int VEC>
__global__ void __launch_bounds__(kThreads)
    softmask_kernel(const TP* __restrict__ pred, const TF* feat, TF* out, int h, int w, long long C,
                    int Hs, int Ws, float sy, float sx, unsigned long long* __restrict__ bad_image,
                    long long image0) {
  const int b = blockIdx.y;
  const long long hw = (long long)h * w;
  const TP* p = pred + (long long)b * hw;

  // min / max of this image's predictions.
  float mn = FLT_MAX, mx = -FLT_MAX;
  bool bad = false;
  for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
    const float v = ld(p, i);
    bad |= !isfinite(v);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  for (int o = 16; o > 0; o >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  __shared__ float smn[kThreads / 32], smx[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    smn[warp] = mn;
    smx[warp] = mx;
  }
  const int any_bad = __syncthreads_or(bad);  // also the barrier for smn / smx
  if (any_bad && bad_image) {  // block-uniform
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicMin(bad_image, (unsigned long long)(image0 + b));
    return;
  }
  mn = smn[0];
  mx = smx[0];
  for (int i = 1; i < kThreads / 32; ++i) {
    mn = fminf(mn, smn[i]);
    mx = fmaxf(mx, smx[i]);
  }
  const bool flat = !(mx > mn);
  const float range = mx - mn;

  const long long plane = (long long)Hs * Ws;
  const long long groups = C * plane / VEC;  // Ws % VEC == 0, so a group never crosses a row
  const TF* f = feat + (long long)b * C * plane;
  TF* o = out + (long long)b * C * plane;
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += (long long)gridDim.x * blockDim.x) {
    const long long e = g * VEC;
    const long long r = e / Ws;
    const int X = (int)(e - r * Ws);
    const int Y = (int)(r % Hs);
    const int iy = min((int)floorf((float)Y * sy), h - 1);
    const TP* prow = p + (long long)iy * w;
    Pack<VEC, TF> in = *reinterpret_cast<const Pack<VEC, TF>*>(f + e);
    Pack<VEC, TF> res;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int ix = min((int)floorf((float)(X + j) * sx), w - 1);
      const float m = flat ? 1.0f : 1.0f - (ld(prow, ix) - mn) / range;
      if constexpr (sizeof(TF) == 2)
        res.v[j] = __float2half_rn(__half2float(in.v[j]) * m);
      else
        res.v[j] = in.v[j] * m;
    }
    *reinterpret_cast<Pack<VEC, TF>*>(o + e) = res;
  }
}

template <class TP, class TF>
void launch(const void* pred, const void* features, void* out, int64_t B, int64_t h, int64_t w, int64_t C,
            int64_t Hs, int64_t Ws, cudaStream_t stream, unsigned long long* bad_image) {
  const float sy = (float)h / (float)Hs, sx = (float)w / (float)Ws;
  const auto addr = reinterpret_cast<std::uintptr_t>(features) | reinterpret_cast<std::uintptr_t>(out);
  const bool vec = (Ws % 4 == 0) && (addr % (4 * sizeof(TF)) == 0);
  const long long per_image = (long long)C * Hs * Ws / (vec ? 4 : 1);
  // One group per thread: many short blocks keep every SM's memory pipeline busy; each block's
  // min/max pass reads only h*w L2-resident predictions. Grid-stride loop beyond 65535 blocks.
  long long blocks = (per_image + kThreads - 1) / kThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535) blocks = 65535;
  for (int64_t b0 = 0; b0 < B; b0 += 65535) {
    const int64_t nb = B - b0 < 65535 ? B - b0 : 65535;
    const TP* p = static_cast<const TP*>(pred) + b0 * h * w;
    const TF* f = static_cast<const TF*>(features) + b0 * C * Hs * Ws;
    TF* o = static_cast<TF*>(out) + b0 * C * Hs * Ws;
    dim3 grid((unsigned)blocks, (unsigned)nb);
    if (vec)
      softmask_kernel<TP, TF, 4><<<grid, kThreads, 0, stream>>>(p, f, o, (int)h, (int)w, C, (int)Hs, (int)Ws, sy, sx,
                                                                 bad_image, b0);
    else
      softmask_kernel<TP, TF, 1><<<grid, kThreads, 0, stream>>>(p, f, o, (int)h, (int)w, C, (int)Hs, (int)Ws, sy, sx,
                                                                 bad_image, b0);
    EDGEAD_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

int64_t softmask_cuda(const void* pred, bool pred_half, const void* features, bool feat_half, void* out, int64_t B,
                      int64_t h, int64_t w, int64_t C, int64_t Hs, int64_t Ws, std::uintptr_t stream_id) {
  if (B == 0) return -1;
  cudaStream_t stream = as_stream(stream_id);
  Scratch flag_buf(stream);
  unsigned long long* bad = nullptr;
  if (!stream_capturing(stream)) {
    bad = flag_buf.alloc<unsigned long long>(1);
    EDGEAD_CUDA_CHECK(cudaMemsetAsync(bad, 0xff, sizeof(unsigned long long), stream));  // ULLONG_MAX: none
  }
  if (pred_half) {
    if (feat_half) launch<__half, __half>(pred, features, out, B, h, w, C, Hs, Ws, stream, bad);
    else launch<__half, float>(pred, features, out, B, h, w, C, Hs, Ws, stream, bad);
  } else {
    if (feat_half) launch<float, __half>(pred, features, out, B, h, w, C, Hs, Ws, stream, bad);
    else launch<float, float>(pred, features, out, B, h, w, C, Hs, Ws, stream, bad);
  }
  if (!bad) return -1;
  unsigned long long first = ~0ull;
  EDGEAD_CUDA_CHECK(cudaMemcpyAsync(&first, bad, sizeof(first), cudaMemcpyDeviceToHost, stream));
  EDGEAD_CUDA_CHECK(cudaStreamSynchronize(stream));
  return first == ~0ull ? -1 : (int64_t)first;
}

}  // namespace edgead

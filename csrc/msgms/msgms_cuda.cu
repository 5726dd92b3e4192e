// MSGMS anomaly map on the GPU (definition: msgms.h, docs/msgms.md). scales + 1 launches:
//  1. gms_level_kernel, once per scale s (fused pool + gradient + GMS): one block per 16x16 tile of
//     level s and image. The block loads the tile's 18x18 halo of both images (level s; replicate
//     padding = clamped indices) into shared memory, computes Prewitt/3 gradients and GMS per
//     channel and writes the channel mean to a per-scale scratch map; from the same shared tile it
//     writes the 8x8 pixels of level s+1 (2x2 mean, stride 2, floor; same summation order as torch
//     avg_pool2d and the CPU kernel) that the next launch reads.
//  2. combine_box_kernel: one block per 32x16 output tile. It evaluates A = 1 - mean_s up_s(gms_s)
//     (bilinear, align_corners=False) on the tile plus an R-pixel halo (clamped = replicate padding)
//     in shared memory, then runs the separable k x k box filter there and writes the final map.
// Scratch (gms maps + pyramid levels 1..S-1) is stream-ordered on the caller's stream from edgead's own
// memory pool (common/cuda_scratch.cuh; freed also when a launch check throws).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/cuda_scratch.cuh"
#include "msgms/msgms.h"

namespace edgead {
namespace {

constexpr int kGmsTile = 16;
constexpr int kBoxTW = 32;
constexpr int kBoxTH = 16;
constexpr int kBoxThreads = 256;

struct Pyramid {
  int S;
  int H, W;
  int Hs[kMsgmsMaxScales];
  int Ws[kMsgmsMaxScales];
  long long off[kMsgmsMaxScales];       // offset of scale s inside one image's scratch
  long long per_image;                  // scratch floats per image
  float scale_h[kMsgmsMaxScales];       // in / out as float, like torch's area_pixel_compute_scale
  float scale_w[kMsgmsMaxScales];
};

__device__ __forceinline__ float load_f(const float* p, long long i) { return __ldg(p + i); }
__device__ __forceinline__ float load_f(const __half* p, long long i) { return __half2float(p[i]); }

// Level s: x, y are (B, C, h, w); nx, ny (B, C, h2, w2) receive level s+1 (null for the last level).
template <class T>
__global__ void __launch_bounds__(kGmsTile* kGmsTile)
    gms_level_kernel(const T* __restrict__ x, const T* __restrict__ y, int B, int C, int h, int w, int tiles_x,
                     float c, float* __restrict__ gms, long long gms_stride, float* __restrict__ nx,
                     float* __restrict__ ny, int h2, int w2) {
  __shared__ float sx[kGmsTile + 2][kGmsTile + 3];
  __shared__ float sy[kGmsTile + 2][kGmsTile + 3];
  const int ty0 = (blockIdx.x / tiles_x) * kGmsTile, tx0 = (blockIdx.x % tiles_x) * kGmsTile;
  const int tx = threadIdx.x % kGmsTile, ty = threadIdx.x / kGmsTile;
  const int gy = ty0 + ty, gx = tx0 + tx;
  const long long plane = (long long)h * w, plane2 = (long long)h2 * w2;
  const float third = 1.0f / 3.0f;
  // Level s+1 pixel handled by this thread (threads with tx, ty < 8).
  const int py = ty0 / 2 + ty, px = tx0 / 2 + tx;
  const bool pools = nx != nullptr && tx < kGmsTile / 2 && ty < kGmsTile / 2 && py < h2 && px < w2;

  for (int b = blockIdx.y; b < B; b += gridDim.y) {
    float acc = 0.f;
    for (int ch = 0; ch < C; ++ch) {
      const long long pc = (long long)b * C + ch;
      const T* xi = x + pc * plane;
      const T* yi = y + pc * plane;
      for (int i = threadIdx.x; i < (kGmsTile + 2) * (kGmsTile + 2); i += blockDim.x) {
        const int ly = i / (kGmsTile + 2), lx = i % (kGmsTile + 2);
        const int Y = min(max(ty0 - 1 + ly, 0), h - 1);
        const int X = min(max(tx0 - 1 + lx, 0), w - 1);
        sx[ly][lx] = load_f(xi, (long long)Y * w + X);
        sy[ly][lx] = load_f(yi, (long long)Y * w + X);
      }
      __syncthreads();
      if (gy < h && gx < w) {
        const int r = ty + 1, q = tx + 1;
        const float gx1 = (((sx[r - 1][q - 1] + sx[r][q - 1]) + sx[r + 1][q - 1]) -
                           ((sx[r - 1][q + 1] + sx[r][q + 1]) + sx[r + 1][q + 1])) * third;
        const float gy1 = (((sx[r - 1][q - 1] - sx[r + 1][q - 1]) + (sx[r - 1][q] - sx[r + 1][q])) +
                           (sx[r - 1][q + 1] - sx[r + 1][q + 1])) * third;
        const float gx2 = (((sy[r - 1][q - 1] + sy[r][q - 1]) + sy[r + 1][q - 1]) -
                           ((sy[r - 1][q + 1] + sy[r][q + 1]) + sy[r + 1][q + 1])) * third;
        const float gy2 = (((sy[r - 1][q - 1] - sy[r + 1][q - 1]) + (sy[r - 1][q] - sy[r + 1][q])) +
                           (sy[r - 1][q + 1] - sy[r + 1][q + 1])) * third;
        const float m1 = gx1 * gx1 + gy1 * gy1;
        const float m2 = gx2 * gx2 + gy2 * gy2;
        acc += (2.0f * sqrtf(m1) * sqrtf(m2) + c) / (m1 + m2 + c);
      }
      if (pools) {
        // Level-s rows/cols 2*py, 2*py+1 < h (floor), i.e. interior (unclamped) cells of the tile.
        const int r = 1 + 2 * ty, q = 1 + 2 * tx;
        const long long o = pc * plane2 + (long long)py * w2 + px;
        nx[o] = (((sx[r][q] + sx[r][q + 1]) + sx[r + 1][q]) + sx[r + 1][q + 1]) * 0.25f;
        ny[o] = (((sy[r][q] + sy[r][q + 1]) + sy[r + 1][q]) + sy[r + 1][q + 1]) * 0.25f;
      }
      __syncthreads();
    }
    if (gy < h && gx < w) gms[(long long)b * gms_stride + (long long)gy * w + gx] = acc / (float)C;
  }
}

__device__ __forceinline__ float sample_scale(const float* g, int h, int w, float sh, float sw, int Y, int X) {
  float fy = sh * ((float)Y + 0.5f) - 0.5f;
  fy = fy < 0.f ? 0.f : fy;
  int y0 = min((int)fy, h - 1);
  const int y1 = y0 < h - 1 ? y0 + 1 : y0;
  const float ly1 = fy - (float)y0, ly0 = 1.f - ly1;
  float fx = sw * ((float)X + 0.5f) - 0.5f;
  fx = fx < 0.f ? 0.f : fx;
  int x0 = min((int)fx, w - 1);
  const int x1 = x0 < w - 1 ? x0 + 1 : x0;
  const float lx1 = fx - (float)x0, lx0 = 1.f - lx1;
  const float* r0 = g + (long long)y0 * w;
  const float* r1 = g + (long long)y1 * w;
  return ly0 * (lx0 * __ldg(r0 + x0) + lx1 * __ldg(r0 + x1)) + ly1 * (lx0 * __ldg(r1 + x0) + lx1 * __ldg(r1 + x1));
}

__global__ void __launch_bounds__(kBoxThreads)
    combine_box_kernel(const float* __restrict__ gms, int B, Pyramid p, int R, int tiles_x, float* __restrict__ out) {
  extern __shared__ float smem[];
  const int AH = kBoxTH + 2 * R, AW = kBoxTW + 2 * R;
  float* A = smem;               // AH x AW
  float* Hs = smem + AH * AW;    // AH x kBoxTW (horizontal sums)
  const int ty0 = (blockIdx.x / tiles_x) * kBoxTH, tx0 = (blockIdx.x % tiles_x) * kBoxTW;
  const float invS = 1.0f / (float)p.S;
  const int k = 2 * R + 1;
  const float inv_area = 1.0f / (float)(k * k);
  const long long plane = (long long)p.H * p.W;

  for (int b = blockIdx.y; b < B; b += gridDim.y) {
    const float* g = gms + (long long)b * p.per_image;
    for (int i = threadIdx.x; i < AH * AW; i += blockDim.x) {
      const int ly = i / AW, lx = i % AW;
      const int Y = min(max(ty0 - R + ly, 0), p.H - 1);
      const int X = min(max(tx0 - R + lx, 0), p.W - 1);
      float a = __ldg(g + (long long)Y * p.W + X);
      for (int s = 1; s < p.S; ++s)
        a += sample_scale(g + p.off[s], p.Hs[s], p.Ws[s], p.scale_h[s], p.scale_w[s], Y, X);
      A[i] = 1.0f - a * invS;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < AH * kBoxTW; i += blockDim.x) {
      const int ly = i / kBoxTW, lx = i % kBoxTW;
      const float* row = A + ly * AW + lx;
      float sum = 0.f;
      for (int d = 0; d < k; ++d) sum += row[d];
      Hs[i] = sum;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kBoxTH * kBoxTW; i += blockDim.x) {
      const int ly = i / kBoxTW, lx = i % kBoxTW;
      const int Y = ty0 + ly, X = tx0 + lx;
      if (Y < p.H && X < p.W) {
        float sum = 0.f;
        for (int d = 0; d < k; ++d) sum += Hs[(ly + d) * kBoxTW + lx];
        out[(long long)b * plane + (long long)Y * p.W + X] = sum * inv_area;
      }
    }
    __syncthreads();
  }
}


}  // namespace

void msgms_cuda(const void* x, const void* y, bool half, int64_t B, int64_t C, int64_t H, int64_t W, int scales,
                float c, int k, float* out, std::uintptr_t stream_id) {
  if (B == 0) return;
  cudaStream_t stream = as_stream(stream_id);
  Pyramid p{};
  p.S = scales;
  p.H = (int)H;
  p.W = (int)W;
  long long off = 0, lvl = 0;
  long long lvl_off[kMsgmsMaxScales] = {0};
  for (int s = 0; s < scales; ++s) {
    p.Hs[s] = s == 0 ? (int)H : p.Hs[s - 1] / 2;
    p.Ws[s] = s == 0 ? (int)W : p.Ws[s - 1] / 2;
    p.off[s] = off;
    off += (long long)p.Hs[s] * p.Ws[s];
    p.scale_h[s] = (float)p.Hs[s] / (float)H;
    p.scale_w[s] = (float)p.Ws[s] / (float)W;
    if (s > 0) {
      lvl_off[s] = lvl;
      lvl += B * C * (long long)p.Hs[s] * p.Ws[s];
    }
  }
  p.per_image = off;

  // edgead's own pool keeps this scratch mapped between calls; the device's default pool is not touched.
  Scratch scratch_buf(stream);
  const long long total = B * off + 2 * lvl;
  float* scratch = scratch_buf.alloc<float>((size_t)total);
  float* gms = scratch;
  float* lx = scratch + B * off;  // pyramid levels 1..S-1 of x, then of y
  float* ly = lx + lvl;
  const unsigned gridB = (unsigned)(B < 65535 ? B : 65535);

  for (int s = 0; s < scales; ++s) {
    const int h = p.Hs[s], w = p.Ws[s];
    const int tiles_x = (int)ceil_div(w, kGmsTile), tiles_y = (int)ceil_div(h, kGmsTile);
    const bool last = s + 1 == scales;
    float* nx = last ? nullptr : lx + lvl_off[s + 1];
    float* ny = last ? nullptr : ly + lvl_off[s + 1];
    const int h2 = last ? 0 : p.Hs[s + 1], w2 = last ? 0 : p.Ws[s + 1];
    dim3 grid((unsigned)(tiles_x * tiles_y), gridB);
    if (s == 0 && half)
      gms_level_kernel<__half><<<grid, kGmsTile * kGmsTile, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<const __half*>(y), (int)B, (int)C, h, w, tiles_x, c, gms + p.off[s],
          off, nx, ny, h2, w2);
    else
      gms_level_kernel<float><<<grid, kGmsTile * kGmsTile, 0, stream>>>(
          s == 0 ? static_cast<const float*>(x) : lx + lvl_off[s], s == 0 ? static_cast<const float*>(y) : ly + lvl_off[s],
          (int)B, (int)C, h, w, tiles_x, c, gms + p.off[s], off, nx, ny, h2, w2);
    EDGEAD_CUDA_CHECK_LAUNCH();
  }

  const int R = k / 2;
  const int tiles_x = (int)ceil_div(W, kBoxTW), tiles_y = (int)ceil_div(H, kBoxTH);
  const size_t smem = sizeof(float) * (size_t)((kBoxTH + 2 * R) * (kBoxTW + 2 * R) + (kBoxTH + 2 * R) * kBoxTW);
  dim3 g2((unsigned)(tiles_x * tiles_y), gridB);
  combine_box_kernel<<<g2, kBoxThreads, smem, stream>>>(gms, (int)B, p, R, tiles_x, out);
  EDGEAD_CUDA_CHECK_LAUNCH();
}

}  // namespace edgead

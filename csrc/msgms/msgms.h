// MSGMS anomaly map (multi-scale gradient magnitude similarity), raw-pointer kernels.
// The pinned definition lives in docs/msgms.md; summary:
//   per channel and scale s = 0..S-1 (scale 0 = input, scale s = 2x2 average pooling, stride 2,
//   floor, of scale s-1), Prewitt/3 gradients with replicate padding, g = sqrt(gx^2 + gy^2),
//   GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c); channel mean; bilinear upsampling to (H, W)
//   (align_corners=False, as torch F.interpolate); map = 1 - mean over scales; then a k x k box
//   filter (mean) with replicate padding. Output (B, H, W) float32.
#pragma once

#include <cstdint>

namespace edgead {

constexpr int kMsgmsMaxScales = 8;
constexpr int kMsgmsMaxFilter = 63;  // largest mean_filter (odd); bounds the CUDA tile's shared memory

// x, y: (B, C, H, W) contiguous, float32 (half = false) or IEEE fp16 bits (half = true).
// out: (B, H, W) float32 contiguous. Requires H, W >= 2^(scales-1), k odd in [1, kMsgmsMaxFilter].
// Returns 0 when every input value is finite, 1 when `x` holds a NaN/Inf, 2 when `y` does
// (the map is then meaningless and the caller raises).
int msgms_cpu(const void* x, const void* y, bool half, int64_t B, int64_t C, int64_t H, int64_t W,
              int scales, float c, int k, float* out);

#ifdef EDGEAD_WITH_CUDA
// Same on the GPU, enqueued on `stream` (cudaStream_t as an integer). Does not scan for
// non-finite values (that would need a host sync): NaN/Inf inputs propagate into the map.
void msgms_cuda(const void* x, const void* y, bool half, int64_t B, int64_t C, int64_t H, int64_t W,
                int scales, float c, int k, float* out, std::uintptr_t stream);
#endif

}  // namespace edgead

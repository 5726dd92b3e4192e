// FADeR soft mask on the CPU (definition: softmask.h). Per image: min/max of the predictions and the
// mask at feature resolution (small), then one multithreaded pass over the (batch, channel) planes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "common/parallel.h"
#include "softmask/softmask.h"

namespace edgead {
namespace {

inline uint16_t float_to_half(float f) {
// _Float16 in C++ is x86-only in GCC < 13 (__FLT16_MAX__ is predefined on aarch64 all the same), so
// other architectures (aarch64: Jetson) take the software conversion.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__FLT16_MAX__)
  _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
#else
  // Round-to-nearest-even software conversion.
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (x < 0x38800000u) {                                               // subnormal or zero
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);
    // |f| = m * 2^(e - 150) = (m >> (126 - e)) half-subnormal units of 2^-24; e in [102, 112].
    const uint32_t e = x >> 23;
    uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t half_m = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half_m & 1))) ++half_m;
    return static_cast<uint16_t>(sign | half_m);
  }
  uint32_t h = ((x - 0x38000000u) >> 13);
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
#endif
}

inline int64_t nearest_src(int64_t dst, float scale, int64_t in) {
  const int64_t i = static_cast<int64_t>(std::floor(static_cast<float>(dst) * scale));
  return i < in - 1 ? i : in - 1;
}

}  // namespace

int64_t softmask_cpu(const void* pred, bool pred_half, const void* features, bool feat_half, void* out, int64_t B,
                     int64_t h, int64_t w, int64_t C, int64_t Hs, int64_t Ws) {
  const int64_t hw = h * w, plane = Hs * Ws;
  // Nearest-neighbour source indices (torch: scale = float(in) / float(out), floor, clamp).
  const float sy = static_cast<float>(h) / static_cast<float>(Hs);
  const float sx = static_cast<float>(w) / static_cast<float>(Ws);
  std::vector<int64_t> iy(Hs), ix(Ws);
  for (int64_t Y = 0; Y < Hs; ++Y) iy[Y] = nearest_src(Y, sy, h);
  for (int64_t X = 0; X < Ws; ++X) ix[X] = nearest_src(X, sx, w);

  // Mask per image at feature resolution.
  std::vector<float> mask(B * plane);
  std::atomic<int64_t> bad{-1};
  parallel_for(B, 1, [&](int64_t bb, int64_t be) {
    std::vector<float> m(hw);
    for (int64_t b = bb; b < be; ++b) {
      float* pm = m.data();
      if (pred_half) {
        const uint16_t* p = static_cast<const uint16_t*>(pred) + b * hw;
        for (int64_t i = 0; i < hw; ++i) pm[i] = half_to_float(p[i]);
      } else {
        const float* p = static_cast<const float*>(pred) + b * hw;
        std::copy(p, p + hw, pm);
      }
      float mn = pm[0], mx = pm[0];
      bool finite = true;
      for (int64_t i = 0; i < hw; ++i) {
        if (!std::isfinite(pm[i])) finite = false;
        mn = std::min(mn, pm[i]);
        mx = std::max(mx, pm[i]);
      }
      if (!finite) {
        int64_t expected = -1;
        bad.compare_exchange_strong(expected, b);
        continue;
      }
      if (mx > mn) {
        const float range = mx - mn;
        for (int64_t i = 0; i < hw; ++i) pm[i] = 1.0f - (pm[i] - mn) / range;
      } else {
        std::fill(pm, pm + hw, 1.0f);
      }
      float* dst = mask.data() + b * plane;
      for (int64_t Y = 0; Y < Hs; ++Y) {
        const float* src = pm + iy[Y] * w;
        for (int64_t X = 0; X < Ws; ++X) dst[Y * Ws + X] = src[ix[X]];
      }
    }
  });
  if (bad.load() >= 0) return bad.load();

  // One contiguous (Hs * Ws) plane per task: f * mask over the plane vectorises. Memory-bound, so
  // threads only for > 2^19 values (a U-Net skip map of a 256x256 image runs serially).
  parallel_for(B * C, std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, plane)), [&](int64_t pb, int64_t pe) {
    for (int64_t q = pb; q < pe; ++q) {
      const float* m = mask.data() + (q / C) * plane;
      if (feat_half) {
        const uint16_t* f = static_cast<const uint16_t*>(features) + q * plane;
        uint16_t* o = static_cast<uint16_t*>(out) + q * plane;
        for (int64_t i = 0; i < plane; ++i) o[i] = float_to_half(half_to_float(f[i]) * m[i]);
      } else {
        const float* f = static_cast<const float*>(features) + q * plane;
        float* o = static_cast<float*>(out) + q * plane;
        for (int64_t i = 0; i < plane; ++i) o[i] = f[i] * m[i];
      }
    }
  });
  return -1;
}

}  // namespace edgead

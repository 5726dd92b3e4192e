// MSGMS anomaly map on the CPU (definition: msgms.h, docs/msgms.md).
// Passes: (0) fp16 -> fp32 when needed, (1) 2x2 average-pool pyramid of both images,
// (2) per scale one fused pass (Prewitt gradients of both images + GMS + channel mean), OpenMP over
// batch x rows, (3) per output row: bilinear upsample-accumulate of all scales, 1 - mean, and the
// horizontal running-sum box filter, (4) vertical running-sum box filter over row chunks.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "common/parallel.h"
#include "msgms/msgms.h"

namespace edgead {
namespace {

inline int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Rows-per-task grain so that small images do not fan out over threads for nothing.
inline int64_t row_grain(int64_t width) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width)); }

// parallel_for when `par`, else a plain serial call (used inside a batch-parallel region).
template <class F>
inline void pfor(bool par, int64_t n, int64_t grain, F&& f) {
  if (par) parallel_for(n, grain, f);
  else if (n > 0) f(int64_t(0), n);
}

// The whole pipeline for B images; `par` = spread each stage over the OpenMP threads (3 parallel
// regions: GMS of all scales, combine + horizontal box, vertical box), else run serially.
int msgms_images(const void* xv, const void* yv, bool half, int64_t B, int64_t C, int64_t H, int64_t W,
                 int S, float c, int k, float* out, bool par) {
  const int64_t plane = H * W;
  const int64_t n0 = B * C * plane;

  // (0) float views of scale 0.
  std::vector<float> x32, y32;
  const float* lx0;
  const float* ly0;
  if (half) {
    x32.resize(n0);
    y32.resize(n0);
    const uint16_t* xh = static_cast<const uint16_t*>(xv);
    const uint16_t* yh = static_cast<const uint16_t*>(yv);
    pfor(par, n0, 1 << 15, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        x32[i] = half_to_float(xh[i]);
        y32[i] = half_to_float(yh[i]);
      }
    });
    lx0 = x32.data();
    ly0 = y32.data();
  } else {
    lx0 = static_cast<const float*>(xv);
    ly0 = static_cast<const float*>(yv);
  }

  // (1) pyramid: level s has (Hs, Ws) = (floor(H / 2^s), floor(W / 2^s)).
  std::vector<int64_t> Hs(S), Ws(S);
  Hs[0] = H;
  Ws[0] = W;
  for (int s = 1; s < S; ++s) {
    Hs[s] = Hs[s - 1] / 2;
    Ws[s] = Ws[s - 1] / 2;
  }
  std::vector<std::vector<float>> px(S), py(S);
  std::vector<const float*> lx(S), ly(S);
  lx[0] = lx0;
  ly[0] = ly0;
  for (int s = 1; s < S; ++s) {
    const int64_t h = Hs[s], w = Ws[s], hp = Hs[s - 1], wp = Ws[s - 1];
    px[s].resize(B * C * h * w);
    py[s].resize(B * C * h * w);
    float* dx = px[s].data();
    float* dy = py[s].data();
    const float* sx = lx[s - 1];
    const float* sy = ly[s - 1];
    pfor(false, B * C * h, row_grain(w), [&](int64_t rb, int64_t re) {  // cheap: serial, no barrier
      for (int64_t r = rb; r < re; ++r) {
        const int64_t bc = r / h, yy = r % h;
        const float* ax0 = sx + bc * hp * wp + (2 * yy) * wp;
        const float* ax1 = ax0 + wp;
        const float* ay0 = sy + bc * hp * wp + (2 * yy) * wp;
        const float* ay1 = ay0 + wp;
        float* ox = dx + r * w;
        float* oy = dy + r * w;
        // Same summation order as torch avg_pool2d: ((x00 + x01) + x10) + x11, then / 4.
        for (int64_t xx = 0; xx < w; ++xx) {
          ox[xx] = (((ax0[2 * xx] + ax0[2 * xx + 1]) + ax1[2 * xx]) + ax1[2 * xx + 1]) * 0.25f;
          oy[xx] = (((ay0[2 * xx] + ay0[2 * xx + 1]) + ay1[2 * xx]) + ay1[2 * xx + 1]) * 0.25f;
        }
      }
    });
    lx[s] = dx;
    ly[s] = dy;
  }

  // (2) fused gradient + GMS + channel mean, all scales in one parallel loop over (scale, row).
  std::vector<std::vector<float>> gms(S);
  std::vector<int64_t> row_begin(S + 1, 0);
  for (int s = 0; s < S; ++s) {
    gms[s].resize(B * Hs[s] * Ws[s]);
    row_begin[s + 1] = row_begin[s] + B * Hs[s];
  }
  std::atomic<int> bad{0};
  const float third = 1.0f / 3.0f;
  const float invC = 1.0f / static_cast<float>(C);
  pfor(par, row_begin[S], row_grain(W * C), [&](int64_t tb, int64_t te) {
    std::vector<float> buf(4 * (W + 2));
    for (int64_t t = tb; t < te; ++t) {
      int s = 0;
      while (t >= row_begin[s + 1]) ++s;
      const int64_t r = t - row_begin[s];
      const int64_t h = Hs[s], w = Ws[s];
      float* g = gms[s].data();
      const float* sx = lx[s];
      const float* sy = ly[s];
      const bool check = (s == 0);
      float* vx = buf.data();          // column sums of 3 rows, padded by one on each side
      float* dxr = vx + (w + 2);       // row difference (up - down), padded
      float* vy = dxr + (w + 2);
      float* dyr = vy + (w + 2);
      {
        const int64_t b = r / h, yy = r % h;
        const int64_t ym = yy > 0 ? yy - 1 : 0, yp = yy < h - 1 ? yy + 1 : h - 1;
        float* acc = g + r * w;
        std::fill(acc, acc + w, 0.0f);
        for (int64_t ch = 0; ch < C; ++ch) {
          const int64_t base = (b * C + ch) * h * w;
          const float* xm = sx + base + ym * w;
          const float* x0 = sx + base + yy * w;
          const float* xp = sx + base + yp * w;
          const float* ym_ = sy + base + ym * w;
          const float* y0 = sy + base + yy * w;
          const float* yp_ = sy + base + yp * w;
          if (check) {
            float cx = 0.0f, cy = 0.0f;
            for (int64_t i = 0; i < w; ++i) {
              cx += x0[i] - x0[i];  // 0 for finite values, NaN for NaN/Inf
              cy += y0[i] - y0[i];
            }
            if (!(cx == 0.0f)) bad.store(1);
            else if (!(cy == 0.0f)) { int z = 0; bad.compare_exchange_strong(z, 2); }
          }
          for (int64_t i = 0; i < w; ++i) {
            vx[i + 1] = (xm[i] + x0[i]) + xp[i];
            dxr[i + 1] = xm[i] - xp[i];
            vy[i + 1] = (ym_[i] + y0[i]) + yp_[i];
            dyr[i + 1] = ym_[i] - yp_[i];
          }
          vx[0] = vx[1];
          vx[w + 1] = vx[w];
          dxr[0] = dxr[1];
          dxr[w + 1] = dxr[w];
          vy[0] = vy[1];
          vy[w + 1] = vy[w];
          dyr[0] = dyr[1];
          dyr[w + 1] = dyr[w];
          for (int64_t i = 0; i < w; ++i) {
            const float gx1 = (vx[i] - vx[i + 2]) * third;
            const float gy1 = ((dxr[i] + dxr[i + 1]) + dxr[i + 2]) * third;
            const float gx2 = (vy[i] - vy[i + 2]) * third;
            const float gy2 = ((dyr[i] + dyr[i + 1]) + dyr[i + 2]) * third;
            const float m1 = gx1 * gx1 + gy1 * gy1;
            const float m2 = gx2 * gx2 + gy2 * gy2;
            acc[i] += (2.0f * std::sqrt(m1) * std::sqrt(m2) + c) / (m1 + m2 + c);
          }
        }
        if (C > 1)
          for (int64_t i = 0; i < w; ++i) acc[i] *= invC;
      }
    }
  });
  const int status = bad.load();
  if (status != 0) return status;

  // Upsampling tables (torch upsample_bilinear2d, align_corners=False, scale = in / out in float).
  struct Taps {
    std::vector<int32_t> i0, i1;
    std::vector<float> l0, l1;
  };
  auto make_taps = [](int64_t in, int64_t outn) {
    Taps t;
    t.i0.resize(outn);
    t.i1.resize(outn);
    t.l0.resize(outn);
    t.l1.resize(outn);
    const float scale = static_cast<float>(in) / static_cast<float>(outn);
    for (int64_t d = 0; d < outn; ++d) {
      float src = scale * (static_cast<float>(d) + 0.5f) - 0.5f;
      if (src < 0.0f) src = 0.0f;
      int64_t i0 = static_cast<int64_t>(src);
      if (i0 > in - 1) i0 = in - 1;
      const int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
      const float l1 = src - static_cast<float>(i0);
      t.i0[d] = static_cast<int32_t>(i0);
      t.i1[d] = static_cast<int32_t>(i1);
      t.l1[d] = l1;
      t.l0[d] = 1.0f - l1;
    }
    return t;
  };
  std::vector<Taps> ty(S), tx(S);
  for (int s = 1; s < S; ++s) {
    ty[s] = make_taps(Hs[s], H);
    tx[s] = make_taps(Ws[s], W);
  }

  // (3) combine scales + horizontal box sum (replicate padding), into hbuf.
  const int R = k / 2;
  const float invS = 1.0f / static_cast<float>(S);
  std::vector<float> hbuf(k > 1 ? B * plane : 0);
  float* hb = k > 1 ? hbuf.data() : out;
  pfor(par, B * H, row_grain(W * S), [&](int64_t rb, int64_t re) {
    std::vector<float> rowbuf(W + 2 * R + W);
    float* padded = rowbuf.data();    // A row with R replicated values on each side
    float* tmp = padded + W + 2 * R;  // vertical interpolation of one scale's row (<= W wide)
    for (int64_t r = rb; r < re; ++r) {
      const int64_t b = r / H, yy = r % H;
      float* a = padded + R;
      const float* g0 = gms[0].data() + b * plane + yy * W;
      for (int64_t i = 0; i < W; ++i) a[i] = g0[i];
      for (int s = 1; s < S; ++s) {
        const int64_t w = Ws[s];
        const float* gs = gms[s].data() + b * Hs[s] * w;
        const float* r0 = gs + static_cast<int64_t>(ty[s].i0[yy]) * w;
        const float* r1 = gs + static_cast<int64_t>(ty[s].i1[yy]) * w;
        const float h0 = ty[s].l0[yy], h1 = ty[s].l1[yy];
        for (int64_t i = 0; i < w; ++i) tmp[i] = h0 * r0[i] + h1 * r1[i];
        const int32_t* i0 = tx[s].i0.data();
        const int32_t* i1 = tx[s].i1.data();
        const float* w0 = tx[s].l0.data();
        const float* w1 = tx[s].l1.data();
        for (int64_t i = 0; i < W; ++i) a[i] += w0[i] * tmp[i0[i]] + w1[i] * tmp[i1[i]];
      }
      for (int64_t i = 0; i < W; ++i) a[i] = 1.0f - a[i] * invS;
      float* dst = hb + r * W;
      if (k == 1) {
        std::memcpy(dst, a, W * sizeof(float));
        continue;
      }
      for (int i = 0; i < R; ++i) {
        padded[i] = a[0];
        a[W + i] = a[W - 1];
      }
      float sum = 0.0f;
      for (int i = 0; i < k; ++i) sum += padded[i];
      dst[0] = sum;
      for (int64_t i = 1; i < W; ++i) {
        sum += padded[i + k - 1] - padded[i - 1];
        dst[i] = sum;
      }
    }
  });
  if (k == 1) return 0;

  // (4) vertical box sum (replicate padding) with running column sums over chunks of rows.
  const float inv_area = 1.0f / static_cast<float>(k * k);
  const int64_t chunk = 32;
  const int64_t nchunks = (H + chunk - 1) / chunk;
  pfor(par, B * nchunks, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> col(W);
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t / nchunks, y0 = (t % nchunks) * chunk, y1 = std::min(H, y0 + chunk);
      const float* hbb = hb + b * plane;
      float* ob = out + b * plane;
      std::fill(col.begin(), col.end(), 0.0f);
      for (int64_t d = -R; d <= R; ++d) {
        const float* src = hbb + clampi(y0 + d, 0, H - 1) * W;
        for (int64_t i = 0; i < W; ++i) col[i] += src[i];
      }
      for (int64_t yy = y0; yy < y1; ++yy) {
        float* dst = ob + yy * W;
        for (int64_t i = 0; i < W; ++i) dst[i] = col[i] * inv_area;
        if (yy + 1 < y1) {
          const float* add = hbb + clampi(yy + R + 1, 0, H - 1) * W;
          const float* sub = hbb + clampi(yy - R, 0, H - 1) * W;
          for (int64_t i = 0; i < W; ++i) col[i] += add[i] - sub[i];
        }
      }
    }
  });
  return 0;
}

}  // namespace

int msgms_cpu(const void* xv, const void* yv, bool half, int64_t B, int64_t C, int64_t H, int64_t W,
              int S, float c, int k, float* out) {
  // Several images: one parallel region over the batch, each thread runs whole images serially
  // (no barriers, cache-local working set). One large image: each stage is spread over the threads.
  // A single small image (< kParallelPixels values, ~1 ms serial) runs serially: waking a second
  // thread for three short regions gains little and costs a scheduler slice per region on a
  // loaded machine.
  constexpr int64_t kParallelPixels = int64_t(1) << 18;
  if (B < 2) return msgms_images(xv, yv, half, B, C, H, W, S, c, k, out, C * H * W >= kParallelPixels);
  const int64_t item = (half ? 2 : 4) * C * H * W;
  std::atomic<int> status{0};
  parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int st = msgms_images(static_cast<const char*>(xv) + b * item, static_cast<const char*>(yv) + b * item,
                                  half, 1, C, H, W, S, c, k, out + b * H * W, false);
      if (st != 0) {
        int z = 0;
        status.compare_exchange_strong(z, st);
      }
    }
  });
  return status.load();
}

}  // namespace edgead

// Greedy k-center on the CPU: one OpenMP parallel region for the whole selection; per step every
// thread does distance-to-last-centre + running min + local argmax over its contiguous slice in one
// pass (AVX-512 when available), then a barrier and a redundant (identical) reduction in every thread.
#include "coreset/coreset.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "common/half.h"
#include "common/parallel.h"

namespace edgead {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

bool has_avx512bw() {
  static const bool v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return v;
}

inline float elem(const void* x, bool fp16, int64_t i) {
  return fp16 ? half_to_float(static_cast<const uint16_t*>(x)[i]) : static_cast<const float*>(x)[i];
}

struct Best {
  float v;
  int64_t i;
};

// One pass over points [b, e): update min_d2 with the distance to `c` (fp32, D values), return the
// slice's (max min_d2, lowest index attaining it).
template <bool FP16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) Best step_avx512(const void* x, int64_t D, int64_t b, int64_t e,
                                                             const float* c, float* mind) {
  Best best{-1.f, -1};
  const int64_t full = D / 16 * 16;
  const __mmask16 tail = (__mmask16)((1u << (D - full)) - 1u);
  for (int64_t i = b; i < e; ++i) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t d = 0;
    int parity = 0;
    for (; d < full; d += 16, parity ^= 1) {
      __m512 v;
      if (FP16)
        v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(x) + i * D + d)));
      else
        v = _mm512_loadu_ps(static_cast<const float*>(x) + i * D + d);
      const __m512 t = _mm512_sub_ps(v, _mm512_loadu_ps(c + d));
      if (parity)
        acc1 = _mm512_fmadd_ps(t, t, acc1);
      else
        acc0 = _mm512_fmadd_ps(t, t, acc0);
    }
    if (d < D) {
      __m512 v;
      if (FP16)
        v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, static_cast<const uint16_t*>(x) + i * D + d));
      else
        v = _mm512_maskz_loadu_ps(tail, static_cast<const float*>(x) + i * D + d);
      const __m512 t = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(tail, c + d));
      acc1 = _mm512_fmadd_ps(t, t, acc1);
    }
    const float d2 = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    const float m = std::min(mind[i], d2);
    mind[i] = m;
    if (m > best.v) best = {m, i};
  }
  return best;
}

Best step_generic(const void* x, bool fp16, int64_t D, int64_t b, int64_t e, const float* c, float* mind,
                  float* row) {
  Best best{-1.f, -1};
  for (int64_t i = b; i < e; ++i) {
    for (int64_t d = 0; d < D; ++d) row[d] = elem(x, fp16, i * D + d);
    float s = 0.f;
    for (int64_t d = 0; d < D; ++d) {
      const float t = row[d] - c[d];
      s += t * t;
    }
    const float m = std::min(mind[i], s);
    mind[i] = m;
    if (m > best.v) best = {m, i};
  }
  return best;
}

}  // namespace

int coreset_cpu(const void* x, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                float* out_dist) {
  std::atomic<bool> finite{true};
  parallel_for(N * D, 1 << 16, [&](int64_t b, int64_t e) {
    bool ok = true;
    if (fp16) {
      const uint16_t* h = static_cast<const uint16_t*>(x);
      for (int64_t i = b; i < e; ++i) ok &= (h[i] & 0x7c00) != 0x7c00;
    } else {
      const float* f = static_cast<const float*>(x);
      for (int64_t i = b; i < e; ++i) ok &= std::isfinite(f[i]);
    }
    if (!ok) finite = false;
  });
  if (!finite) return CORESET_NONFINITE;

  std::vector<float> mind(size_t(N), kInf);
  out_idx[0] = start;
  if (out_dist) out_dist[0] = kInf;
  if (n <= 1) return CORESET_OK;
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(cpu_threads(), N / 1024 + 1));
  std::vector<Best> slots(size_t(2 * T));
  const bool avx512 = has_avx512bw();

  auto body = [&](int64_t tid, int64_t nt) {  // nt <= T threads actually running
    const int64_t b = N * tid / nt, e = N * (tid + 1) / nt;
    std::vector<float> c(static_cast<size_t>(D)), row(static_cast<size_t>(D));
    int64_t cur = start;
    for (int64_t s = 1; s < n; ++s) {
      for (int64_t d = 0; d < D; ++d) c[size_t(d)] = elem(x, fp16, cur * D + d);
      Best best;
      if (avx512)
        best = fp16 ? step_avx512<true>(x, D, b, e, c.data(), mind.data())
                    : step_avx512<false>(x, D, b, e, c.data(), mind.data());
      else
        best = step_generic(x, fp16, D, b, e, c.data(), mind.data(), row.data());
      slots[size_t((s & 1) * T + tid)] = best;
#ifdef EDGEAD_WITH_OPENMP
#pragma omp barrier
#endif
      Best g{-1.f, -1};
      for (int64_t t = 0; t < nt; ++t) {  // slices are in ascending index order: '>' keeps the lowest index
        const Best& o = slots[size_t((s & 1) * T + t)];
        if (o.i >= 0 && o.v > g.v) g = o;
      }
      cur = g.i;
      if (tid == 0) {
        out_idx[s] = g.i;
        if (out_dist) out_dist[s] = std::sqrt(g.v);
      }
    }
  };
#ifdef EDGEAD_WITH_OPENMP
#pragma omp parallel num_threads(T)
  body(omp_get_thread_num(), std::min<int64_t>(T, omp_get_num_threads()));
#else
  body(0, 1);
#endif
  return CORESET_OK;
}

}  // namespace edgead

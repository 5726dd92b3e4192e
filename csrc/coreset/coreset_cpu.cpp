// Greedy k-center on the CPU: one OpenMP parallel region for the whole selection; per step every
// thread does distance-to-last-centre + running min + local argmax over its contiguous slice in one
// pass (AVX-512 when available), then a barrier and a redundant (identical) reduction in every thread.
// Points provably unaffected by the new centre (triangle inequality, see kPrune) are skipped without
// reading their features; the selection is identical to the plain loop.
// The AVX-512 path is compiled only on x86; elsewhere (aarch64: Jetson) the generic path is used and
// has_avx512bw() is constant false.
#include "coreset/coreset.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

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

#if defined(__x86_64__) || defined(__i386__)
bool has_avx512bw() {
  static const bool v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return v;
}
#else
constexpr bool has_avx512bw() { return false; }
#endif

inline float elem(const void* x, bool fp16, int64_t i) {
  return fp16 ? half_to_float(static_cast<const uint16_t*>(x)[i]) : static_cast<const float*>(x)[i];
}

struct Best {
  float v;
  int64_t i;
};

#if defined(__x86_64__) || defined(__i386__)
// |x_r - c|^2, fp32 accumulation (two accumulators, masked tail).
template <bool FP16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline float dist2_avx512(const void* x, int64_t r, int64_t D,
                                                                              const float* c) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  const int64_t full = D / 16 * 16;
  int64_t d = 0;
  for (; d + 32 <= full; d += 32) {
    __m512 v0, v1;
    if (FP16) {
      const uint16_t* h = static_cast<const uint16_t*>(x) + r * D + d;
      v0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
      v1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 16)));
    } else {
      const float* f = static_cast<const float*>(x) + r * D + d;
      v0 = _mm512_loadu_ps(f);
      v1 = _mm512_loadu_ps(f + 16);
    }
    const __m512 t0 = _mm512_sub_ps(v0, _mm512_loadu_ps(c + d));
    const __m512 t1 = _mm512_sub_ps(v1, _mm512_loadu_ps(c + d + 16));
    acc0 = _mm512_fmadd_ps(t0, t0, acc0);
    acc1 = _mm512_fmadd_ps(t1, t1, acc1);
  }
  for (; d < full; d += 16) {
    __m512 v;
    if (FP16)
      v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(x) + r * D + d)));
    else
      v = _mm512_loadu_ps(static_cast<const float*>(x) + r * D + d);
    const __m512 t = _mm512_sub_ps(v, _mm512_loadu_ps(c + d));
    acc0 = _mm512_fmadd_ps(t, t, acc0);
  }
  if (d < D) {
    const __mmask16 tail = (__mmask16)((1u << (D - d)) - 1u);
    __m512 v;
    if (FP16)
      v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, static_cast<const uint16_t*>(x) + r * D + d));
    else
      v = _mm512_maskz_loadu_ps(tail, static_cast<const float*>(x) + r * D + d);
    const __m512 t = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(tail, c + d));
    acc1 = _mm512_fmadd_ps(t, t, acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif

inline float dist2_generic(const void* x, bool fp16, int64_t r, int64_t D, const float* c) {
  float s = 0.f;
  for (int64_t d = 0; d < D; ++d) {
    const float t = elem(x, fp16, r * D + d) - c[d];
    s += t * t;
  }
  return s;
}

// Exact pruning (triangle inequality): a point whose nearest centre so far is a (min_d2 = m) cannot get
// closer to the new centre c when |c - c_a|^2 >= 4 m (then |x - c| >= |c - c_a| - |x - c_a| >= sqrt(m)).
// kPrune = 4 * 1.01 leaves a 1% margin on the squared distances for float32 rounding, so a skipped
// point's computed distance would have been >= m and left min_d2 unchanged: the result is identical
// to the unpruned loop. Helps clustered (real) features; uniform high-dimensional noise prunes little.
constexpr float kPrune = 4.04f;

struct StepCtx {
  const void* x;
  int64_t D;
  const float* c;        // current centre, fp32
  int32_t pos;           // its position in the selection
  float* mind;           // (N,) min squared distance to the selection
  int32_t* asg;          // (N,) selection position of the nearest centre, -1 = none
  const int64_t* sel;    // selection so far (this thread's copy)
  float* cc;             // (n,) |c - centre_a|^2, valid where stamp[a] == pos (thread-local cache)
  int32_t* stamp;
  bool prune;            // try the pruning test this step
  int64_t* skipped;      // out: points skipped
};

// One pass over points [b, e): update min_d2 with the distance to the current centre, return the
// slice's (max min_d2, lowest index attaining it).
template <class Dist>
inline Best step_points(const StepCtx& k, int64_t b, int64_t e, Dist dist2) {
  Best best{-1.f, -1};
  int64_t skipped = 0;
  for (int64_t i = b; i < e; ++i) {
    float m = k.mind[i];
    const int32_t a = k.asg[i];
    bool skip = false;
    if (k.prune && a >= 0) {
      if (k.stamp[a] != k.pos) {
        k.cc[a] = dist2(k.sel[a]);
        k.stamp[a] = k.pos;
      }
      skip = k.cc[a] >= kPrune * m;
    }
    skipped += skip;
    if (!skip) {
      const float d2 = dist2(i);
      if (d2 < m) {
        m = d2;
        k.mind[i] = m;
        k.asg[i] = k.pos;
      }
    }
    if (m > best.v) best = {m, i};
  }
  *k.skipped = skipped;
  return best;
}

#if defined(__x86_64__) || defined(__i386__)
template <bool FP16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) Best step_avx512(const StepCtx& k, int64_t b, int64_t e) {
  return step_points(k, b, e, [&](int64_t r) __attribute__((target("avx512f,avx512bw,avx512vl"))) {
    return dist2_avx512<FP16>(k.x, r, k.D, k.c);
  });
}
#endif

Best step_generic(const StepCtx& k, bool fp16, int64_t b, int64_t e) {
  return step_points(k, b, e, [&](int64_t r) { return dist2_generic(k.x, fp16, r, k.D, k.c); });
}

}  // namespace

int coreset_cpu_check(const void* x, bool fp16, int64_t N, int64_t D) {
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
  return finite ? CORESET_OK : CORESET_NONFINITE;
}

void coreset_cpu_init(int64_t N, int64_t start, float* min_d2, int32_t* assign, int64_t* out_idx, float* out_dist) {
  std::fill(min_d2, min_d2 + N, kInf);
  std::fill(assign, assign + N, int32_t(-1));
  out_idx[0] = start;
  if (out_dist) out_dist[0] = kInf;
}

void coreset_cpu_steps(const void* x, bool fp16, int64_t N, int64_t D, int64_t s0, int64_t s1, float* min_d2,
                       int32_t* assign, int64_t* out_idx, float* out_dist) {
  if (s0 < 1 || s1 <= s0) return;
  float* mind = min_d2;
  int32_t* asg = assign;
  // One thread for small inputs: every step ends in a barrier, which a loaded machine makes expensive.
  const int64_t T = N * D < (int64_t(1) << 18) ? 1 : std::max<int64_t>(1, std::min<int64_t>(cpu_threads(), N / 1024 + 1));
  std::vector<Best> slots(size_t(2 * T));
  [[maybe_unused]] const bool avx512 = has_avx512bw();

  auto body = [&](int64_t tid, int64_t nt) {  // nt <= T threads actually running
    const int64_t b = N * tid / nt, e = N * (tid + 1) / nt;
    std::vector<float> c(static_cast<size_t>(D)), cc(static_cast<size_t>(s1));
    std::vector<int32_t> stamp(static_cast<size_t>(s1), -1);
    std::vector<int64_t> sel(out_idx, out_idx + s0);  // selection so far (this thread's copy)
    sel.resize(static_cast<size_t>(s1));
    // Pruning costs a centre-centre distance per referenced centre; where it skips < 10% of the
    // points (uniform high-dimensional data) it is switched off and re-tried every 32 steps.
    // (Pruning never changes the selection, so resuming with it switched on is exact.)
    bool prune = true;
    int64_t skipped = 0;
    for (int64_t s = s0; s < s1; ++s) {
      if (s % 32 == 0) prune = true;
      const int64_t cur = sel[size_t(s - 1)];
      for (int64_t d = 0; d < D; ++d) c[size_t(d)] = elem(x, fp16, cur * D + d);
      const StepCtx ctx{x, D, c.data(), int32_t(s - 1), mind, asg, sel.data(), cc.data(), stamp.data(), prune,
                        &skipped};
      Best best;
#if defined(__x86_64__) || defined(__i386__)
      if (avx512)
        best = fp16 ? step_avx512<true>(ctx, b, e) : step_avx512<false>(ctx, b, e);
      else
#endif
        best = step_generic(ctx, fp16, b, e);
      if (prune && skipped * 10 < e - b) prune = false;
      slots[size_t((s & 1) * T + tid)] = best;
#ifdef EDGEAD_WITH_OPENMP
#pragma omp barrier
#endif
      Best g{-1.f, -1};
      for (int64_t t = 0; t < nt; ++t) {  // slices are in ascending index order: '>' keeps the lowest index
        const Best& o = slots[size_t((s & 1) * T + t)];
        if (o.i >= 0 && o.v > g.v) g = o;
      }
      sel[size_t(s)] = g.i;
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
}

int coreset_cpu(const void* x, bool fp16, int64_t N, int64_t D, int64_t n, int64_t start, int64_t* out_idx,
                float* out_dist) {
  if (coreset_cpu_check(x, fp16, N, D) != CORESET_OK) return CORESET_NONFINITE;
  std::vector<float> mind(static_cast<size_t>(N));
  std::vector<int32_t> asg(static_cast<size_t>(N));
  coreset_cpu_init(N, start, mind.data(), asg.data(), out_idx, out_dist);
  coreset_cpu_steps(x, fp16, N, D, 1, n, mind.data(), asg.data(), out_idx, out_dist);
  return CORESET_OK;
}

}  // namespace edgead

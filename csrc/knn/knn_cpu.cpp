// knn on the CPU: a small BLIS-style GEMM (packed query/bank panels, register-blocked micro-kernel of
// MR queries x NR bank rows, AVX-512 when the CPU has it) fused with a running per-query top-k, so the
// Q x M distance matrix never exists: only an (MC x NC) tile per thread. OpenMP over query blocks
// (and, when there are fewer query blocks than threads, over bank ranges merged at the end).
// x86 SIMD paths (F16C, AVX2, AVX-512) are compiled only on x86; elsewhere (aarch64: Jetson) the
// scalar/generic paths are used and the has_*() helpers are constant false.
#include "knn/knn.h"

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

constexpr int MR = 8;    // queries per micro-tile
constexpr int NR = 32;   // bank rows per micro-tile (2 zmm)
constexpr int KC = 128;  // feature dims per packed panel (B micro-panel 16 KiB, A micro-panel 4 KiB: L1)
constexpr int NC = 256;  // bank rows per tile
constexpr float kInf = std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- fp16/fp32 row -> fp32 -------------------------------------------------------------------
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx,f16c"))) void half_row_f16c(const uint16_t* src, int64_t D, float* dst) {
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + d))));
  for (; d < D; ++d) dst[d] = half_to_float(src[d]);
}
#endif

void half_row_scalar(const uint16_t* src, int64_t D, float* dst) {
  for (int64_t d = 0; d < D; ++d) dst[d] = half_to_float(src[d]);
}

#if defined(__x86_64__) || defined(__i386__)
bool has_f16c() {
  static const bool v = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return v;
}
bool has_avx512() {
  static const bool v = __builtin_cpu_supports("avx512f");
  return v;
}
bool has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}
#else
constexpr bool has_f16c() { return false; }
constexpr bool has_avx512() { return false; }
constexpr bool has_avx2() { return false; }
#endif

// Row `r` of an (N, D) fp32/fp16 matrix as fp32: a pointer into `src` (fp32) or into `tmp` (fp16).
inline const float* row_f32(const void* src, bool fp16, int64_t r, int64_t D, float* tmp) {
  if (!fp16) return static_cast<const float*>(src) + r * D;
  const uint16_t* h = static_cast<const uint16_t*>(src) + r * D;
#if defined(__x86_64__) || defined(__i386__)
  if (has_f16c())
    half_row_f16c(h, D, tmp);
  else
#endif
    half_row_scalar(h, D, tmp);
  return tmp;
}

inline bool row_finite_sq(const float* x, int64_t D, double* sq) {
  double s = 0.0;
  bool ok = true;
  for (int64_t d = 0; d < D; ++d) {
    float v = x[d];
    ok &= std::isfinite(v);
    s += double(v) * double(v);
  }
  *sq = s;
  return ok;
}

// Packs `rows` rows starting at r0 into panels of P rows: dst[kb*KC*rows_p + panel*kc*P + p*P + i].
// Returns false when a value is not finite; writes ||row||^2 into norms (if not null).
template <int P>
bool pack_panels(const void* src, bool fp16, int64_t r0, int64_t rows, int64_t D, float* dst, float* norms,
                 float* tmp) {
  const int64_t rows_p = round_up(rows, P);
  bool ok = true;
  for (int64_t r = 0; r < rows_p; ++r) {
    const int64_t panel = r / P, i = r % P;
    const float* x = r < rows ? row_f32(src, fp16, r0 + r, D, tmp) : nullptr;
    if (x) {
      double sq;
      ok &= row_finite_sq(x, D, &sq);
      if (norms) norms[r] = float(sq);
    } else if (norms) {
      norms[r] = 0.f;
    }
    for (int64_t kb = 0; kb * KC < D; ++kb) {
      const int64_t k0 = kb * KC, kc = std::min<int64_t>(KC, D - k0);
      float* out = dst + kb * KC * rows_p + panel * kc * P + i;
      if (x)
        for (int64_t p = 0; p < kc; ++p) out[p * P] = x[k0 + p];
      else
        for (int64_t p = 0; p < kc; ++p) out[p * P] = 0.f;
    }
  }
  return ok;
}

// ---- micro-kernels: C[MR x NR] (+)= A_panel^T B_panel over kc ----------------------------------
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) void ukr_avx512(int64_t kc, const float* __restrict A, const float* __restrict B,
                                                   float* __restrict C, int64_t ldc, bool accumulate) {
  __m512 c0[MR], c1[MR];
  if (accumulate) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      c0[i] = _mm512_loadu_ps(C + i * ldc);
      c1[i] = _mm512_loadu_ps(C + i * ldc + 16);
    }
  } else {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(B + p * NR), b1 = _mm512_loadu_ps(B + p * NR + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(A[p * MR + i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_storeu_ps(C + i * ldc, c0[i]);
    _mm512_storeu_ps(C + i * ldc + 16, c1[i]);
  }
}
#endif

#define EDGEAD_KNN_GENERIC_UKR_BODY                                          \
  float c[MR][NR];                                                           \
  for (int i = 0; i < MR; ++i)                                               \
    for (int j = 0; j < NR; ++j) c[i][j] = accumulate ? C[i * ldc + j] : 0.f; \
  for (int64_t p = 0; p < kc; ++p) {                                         \
    const float* a = A + p * MR;                                             \
    const float* b = B + p * NR;                                             \
    for (int i = 0; i < MR; ++i)                                             \
      for (int j = 0; j < NR; ++j) c[i][j] += a[i] * b[j];                   \
  }                                                                          \
  for (int i = 0; i < MR; ++i)                                               \
    for (int j = 0; j < NR; ++j) C[i * ldc + j] = c[i][j];

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void ukr_avx2(int64_t kc, const float* __restrict A, const float* __restrict B,
                                                  float* __restrict C, int64_t ldc, bool accumulate) {
  EDGEAD_KNN_GENERIC_UKR_BODY
}
#endif
void ukr_generic(int64_t kc, const float* __restrict A, const float* __restrict B, float* __restrict C, int64_t ldc,
                 bool accumulate) {
  EDGEAD_KNN_GENERIC_UKR_BODY
}

using Ukr = void (*)(int64_t, const float*, const float*, float*, int64_t, bool);
Ukr pick_ukr() {
#if defined(__x86_64__) || defined(__i386__)
  return has_avx512() ? ukr_avx512 : (has_avx2() ? ukr_avx2 : ukr_generic);
#else
  return ukr_generic;
#endif
}

// ---- top-k lists: ascending by (distance, index); index -1 / +inf are empty slots ----------------
inline bool before(float da, int64_t ia, float db, int64_t ib) {
  if (da < db) return true;
  if (db < da) return false;
  if (ia < 0) return false;
  if (ib < 0) return true;
  return ia < ib;
}

inline void topk_insert(float* td, int64_t* ti, int k, float d, int64_t idx) {
  if (!before(d, idx, td[k - 1], ti[k - 1])) return;
  int pos = k - 1;
  while (pos > 0 && before(d, idx, td[pos - 1], ti[pos - 1])) {
    td[pos] = td[pos - 1];
    ti[pos] = ti[pos - 1];
    --pos;
  }
  td[pos] = d;
  ti[pos] = idx;
}

}  // namespace

void sq_norms_cpu(const void* x, bool fp16, int64_t N, int64_t D, float* out) {
  parallel_for(N, std::max<int64_t>(256, (int64_t(1) << 18) / (D + 1)), [&](int64_t b, int64_t e) {
    std::vector<float> tmp(fp16 ? D : 0);
    for (int64_t r = b; r < e; ++r) {
      const float* v = row_f32(x, fp16, r, D, tmp.data());
      double s = 0.0;
      for (int64_t d = 0; d < D; ++d) s += double(v[d]) * double(v[d]);
      out[r] = float(s);
    }
  });
}

int knn_cpu(const void* queries, const void* bank, bool fp16, const float* bank_sq_norms, int64_t Q, int64_t M,
            int64_t D, int k, float* out_dist, int64_t* out_idx) {
  // Small problems run on one thread: on a loaded machine a parallel region costs a scheduler slice.
  const int64_t T = (double(Q) * double(M) * double(D) < double(1 << 22)) ? 1 : cpu_threads();
  std::vector<float> bn_local;
  const float* bn = bank_sq_norms;
  if (!bn) {
    bn_local.resize(M);
    sq_norms_cpu(bank, fp16, M, D, bn_local.data());
    bn = bn_local.data();
  }

  // Query blocks: a multiple of the thread count, at most ~512 rows each (A block stays in L2).
  const int64_t per_thread = cdiv(Q, T);
  const int64_t nb_target = T * cdiv(per_thread, 512);
  const int64_t MC = std::max<int64_t>(MR, round_up(cdiv(Q, nb_target), MR));
  const int64_t nqb = cdiv(Q, MC);
  int64_t splits = 1;
  if (nqb < T) splits = std::max<int64_t>(1, std::min<int64_t>(cdiv(T, nqb), cdiv(M, NC)));
  const int64_t items = nqb * splits;

  std::vector<float> cand_d(size_t(splits * Q * k));
  std::vector<int64_t> cand_i(size_t(splits * Q * k));
  std::atomic<int> status{KNN_OK};
  const Ukr ukr = pick_ukr();

  parallel_for(items, 1, [&](int64_t ib, int64_t ie) {
    std::vector<float> tmp(D), Ap, Bp, Ct, qn;
    for (int64_t item = ib; item < ie; ++item) {
      const int64_t qb = item / splits, sp = item % splits;
      const int64_t q0 = qb * MC, mb = std::min(MC, Q - q0), mbp = round_up(mb, MR);
      const int64_t m_begin = M * sp / splits, m_end = M * (sp + 1) / splits;
      Ap.assign(size_t(mbp * D), 0.f);
      qn.assign(size_t(mbp), 0.f);
      if (!pack_panels<MR>(queries, fp16, q0, mb, D, Ap.data(), qn.data(), tmp.data())) status = KNN_NONFINITE_QUERIES;
      float* td_all = cand_d.data() + (sp * Q + q0) * k;
      int64_t* ti_all = cand_i.data() + (sp * Q + q0) * k;
      std::fill(td_all, td_all + mb * k, kInf);
      std::fill(ti_all, ti_all + mb * k, int64_t(-1));
      for (int64_t m0 = m_begin; m0 < m_end; m0 += NC) {
        const int64_t nc = std::min<int64_t>(NC, m_end - m0), ncp = round_up(nc, NR);
        Bp.resize(size_t(ncp * D));
        Ct.resize(size_t(mbp * ncp));
        if (!pack_panels<NR>(bank, fp16, m0, nc, D, Bp.data(), nullptr, tmp.data())) status = KNN_NONFINITE_BANK;
        for (int64_t kb = 0; kb * KC < D; ++kb) {
          const int64_t kc = std::min<int64_t>(KC, D - kb * KC);
          const float* Ak = Ap.data() + kb * KC * mbp;
          const float* Bk = Bp.data() + kb * KC * ncp;
          for (int64_t jp = 0; jp < ncp / NR; ++jp)
            for (int64_t ip = 0; ip < mbp / MR; ++ip)
              ukr(kc, Ak + ip * kc * MR, Bk + jp * kc * NR, Ct.data() + ip * MR * ncp + jp * NR, ncp, kb > 0);
        }
        // Running top-k; bank rows arrive in ascending order, so '<' keeps the lowest index on ties.
        for (int64_t i = 0; i < mb; ++i) {
          float* td = td_all + i * k;
          int64_t* ti = ti_all + i * k;
          const float* c = Ct.data() + i * ncp;
          const float q2 = qn[i];
          float worst = td[k - 1];
          for (int64_t j = 0; j < nc; ++j) {
            const float d2 = std::max(q2 + bn[m0 + j] - 2.f * c[j], 0.f);
            if (d2 < worst) {
              topk_insert(td, ti, k, d2, m0 + j);
              worst = td[k - 1];
            }
          }
        }
      }
    }
  });
  if (status != KNN_OK) return status;

  // Merge the bank splits, then recompute the winners' distances directly (float64) and re-sort.
  parallel_for(Q, std::max<int64_t>(16, (int64_t(1) << 18) / (int64_t(k) * D + 1)), [&](int64_t b, int64_t e) {
    std::vector<float> qtmp(D), btmp(D), td(k);
    std::vector<int64_t> ti(k);
    std::vector<std::pair<double, int64_t>> fin(k);
    for (int64_t q = b; q < e; ++q) {
      std::fill(td.begin(), td.end(), kInf);
      std::fill(ti.begin(), ti.end(), int64_t(-1));
      for (int64_t sp = 0; sp < splits; ++sp)
        for (int j = 0; j < k; ++j) {
          const size_t o = size_t((sp * Q + q) * k + j);
          if (cand_i[o] >= 0) topk_insert(td.data(), ti.data(), k, cand_d[o], cand_i[o]);
        }
      const float* qv = row_f32(queries, fp16, q, D, qtmp.data());
      for (int j = 0; j < k; ++j) {
        if (ti[j] < 0) {
          fin[j] = {std::numeric_limits<double>::infinity(), -1};
          continue;
        }
        const float* bv = row_f32(bank, fp16, ti[j], D, btmp.data());
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          const double t = double(qv[d]) - double(bv[d]);
          s += t * t;
        }
        fin[j] = {std::sqrt(s), ti[j]};
      }
      std::sort(fin.begin(), fin.end(), [](const auto& a, const auto& c) {
        return before(float(a.first), a.second, float(c.first), c.second);
      });
      for (int j = 0; j < k; ++j) {
        out_dist[q * k + j] = float(fin[j].first);
        out_idx[q * k + j] = fin[j].second;
      }
    }
  });
  return KNN_OK;
}

}  // namespace edgead

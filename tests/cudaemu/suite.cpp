// Equivalence suite: every op's *_cuda() entry (the unmodified csrc/*/*_cuda.cu, run by cudaemu) against
// its *_cpu() implementation on the same inputs. Usage: cudaemu_suite GROUP [CASE-SUBSTRING]
// GROUP: knn, coreset, msgms, softmask, pro, fixes (item-4 behaviours of issue 9), all.
// Exit status 0 when every case matched; 1 on a mismatch; the emulator itself exits 86/87 with file:line.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "coreset/coreset.h"
#include "knn/knn.h"
#include "msgms/msgms.h"
#include "pro/pro.h"
#include "softmask/softmask.h"

using namespace edgead;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

uint16_t f2h(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float h2f(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return (float)h;
}

template <class T>
T* dev(const std::vector<T>& h) {
  T* p = nullptr;
  if (cudaMalloc(&p, sizeof(T) * std::max<size_t>(h.size(), 1)) != cudaSuccess) throw std::runtime_error("cudaMalloc");
  if (!h.empty()) cudaMemcpy(p, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice);
  return p;
}
template <class T>
T* dev_empty(size_t n) {
  T* p = nullptr;
  cudaMalloc(&p, sizeof(T) * std::max<size_t>(n, 1));
  return p;
}
template <class T>
std::vector<T> host(const T* p, size_t n) {
  std::vector<T> h(n);
  if (n) cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost);
  return h;
}

// Input bytes: fp32 values or their fp16 bits.
struct Mat {
  std::vector<float> f;
  std::vector<uint16_t> h;
  bool fp16 = false;
  const void* ptr() const { return fp16 ? (const void*)h.data() : (const void*)f.data(); }
  size_t bytes() const { return fp16 ? h.size() * 2 : f.size() * 4; }
  void* to_dev() const {
    void* p = nullptr;
    cudaMalloc(&p, std::max<size_t>(bytes(), 1));
    cudaMemcpy(p, ptr(), bytes(), cudaMemcpyHostToDevice);
    return p;
  }
};
Mat make_mat(const std::vector<float>& v, bool fp16) {
  Mat m;
  m.fp16 = fp16;
  if (fp16) {
    m.h.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) m.h[i] = f2h(v[i]);
    m.f.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) m.f[i] = h2f(m.h[i]);
  } else {
    m.f = v;
  }
  return m;
}

std::vector<float> rand_floats(std::mt19937& g, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
// Small integers: every product and sum is exact in fp32, so CPU and CUDA must agree bit for bit
// (including every tie-break).
std::vector<float> rand_ints(std::mt19937& g, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)d(g);
  return v;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

bool close(double a, double b, double rtol, double atol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}

// ---- status of the CUDA entry points whatever they return (void on main, a status after the fixes) ----
const int kNotReported = -1000;

template <class F>
int status_of(F&& f, std::string* thrown) {
  try {
    if constexpr (std::is_void<decltype(f())>::value) {
      f();
      return kNotReported;
    } else {
      return (int)f();
    }
  } catch (const std::exception& e) {
    if (thrown) *thrown = e.what();
    return kNotReported - 1;
  }
}

// Runs f with environment variables set, restoring the previous values after (also when f throws).
template <class F>
std::string with_env(const std::vector<std::pair<std::string, std::string>>& vars, F&& f) {
  std::vector<std::pair<std::string, std::string>> saved;
  std::vector<std::string> unset;
  for (const auto& kv : vars) {
    const char* old = std::getenv(kv.first.c_str());
    if (old) saved.emplace_back(kv.first, old);
    else unset.push_back(kv.first);
    setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }
  std::string r;
  try {
    r = f();
  } catch (const std::exception& e) {
    r = std::string("exception: ") + e.what();
  }
  for (const auto& kv : saved) setenv(kv.first.c_str(), kv.second.c_str(), 1);
  for (const auto& n : unset) unsetenv(n.c_str());
  return r;
}

// ================================================= knn ==================================================
struct KnnCase {
  int64_t Q, M, D;
  int k;
  bool fp16;
  bool ints;  // exact data: indices and distances must match exactly
  bool given_norms;
  int dup;    // every bank row repeated `dup` times (ties), queries copy bank rows
};

double true_dist(const Mat& q, const Mat& b, int64_t qi, int64_t bi, int64_t D) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double t = (double)q.f[qi * D + d] - (double)b.f[bi * D + d];
    s += t * t;
  }
  return std::sqrt(s);
}

std::string run_knn(const KnnCase& c, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> qv, bv;
  if (c.ints) {
    bv = rand_ints(g, c.M * c.D, -3, 3);
    qv = rand_ints(g, c.Q * c.D, -3, 3);
  } else {
    bv = rand_floats(g, c.M * c.D, -1.f, 1.f);
    qv = rand_floats(g, c.Q * c.D, -1.f, 1.f);
  }
  if (c.dup > 1) {  // row r repeats row r % (M / dup): copies sit in other 64-row tiles (cross-tile ties)
    const int64_t distinct = (c.M + c.dup - 1) / c.dup;
    for (int64_t r = distinct; r < c.M; ++r)
      for (int64_t d = 0; d < c.D; ++d) bv[r * c.D + d] = bv[(r % distinct) * c.D + d];
  }
  if (c.dup > 0)  // some queries sit exactly on bank rows (distance 0, tied across duplicates)
    for (int64_t q = 0; q < c.Q; q += 2)
      for (int64_t d = 0; d < c.D; ++d) qv[q * c.D + d] = bv[((q * 7) % c.M) * c.D + d];
  const Mat qm = make_mat(qv, c.fp16), bm = make_mat(bv, c.fp16);
  std::vector<float> norms(c.M);
  sq_norms_cpu(bm.ptr(), c.fp16, c.M, c.D, norms.data());
  std::vector<float> cd(c.Q * c.k);
  std::vector<int64_t> ci(c.Q * c.k);
  const int cs = knn_cpu(qm.ptr(), bm.ptr(), c.fp16, c.given_norms ? norms.data() : nullptr, c.Q, c.M, c.D, c.k,
                         cd.data(), ci.data());
  if (cs != KNN_OK) return fmt("knn_cpu status %d", cs);

  void* dq = qm.to_dev();
  void* db = bm.to_dev();
  float* dn = dev(norms);
  float* dd = dev_empty<float>(c.Q * c.k);
  int64_t* di = dev_empty<int64_t>(c.Q * c.k);
  knn_cuda(dq, db, c.fp16, c.given_norms ? dn : nullptr, c.Q, c.M, c.D, c.k, dd, di, 0);
  // sq_norms_cuda against sq_norms_cpu as well.
  float* dn2 = dev_empty<float>(c.M);
  sq_norms_cuda(db, c.fp16, c.M, c.D, dn2, 0);
  const auto gd = host(dd, c.Q * c.k);
  const auto gi = host(di, c.Q * c.k);
  const auto gn = host(dn2, c.M);
  cudaFree(dq);
  cudaFree(db);
  cudaFree(dn);
  cudaFree(dd);
  cudaFree(di);
  cudaFree(dn2);
  for (int64_t r = 0; r < c.M; ++r)
    if (!close(gn[r], norms[r], 1e-5, 1e-5)) return fmt("sq_norms row %lld: cuda %g cpu %g", (long long)r, gn[r], norms[r]);
  for (int64_t q = 0; q < c.Q; ++q)
    for (int j = 0; j < c.k; ++j) {
      const int64_t o = q * c.k + j;
      if (c.ints) {
        if (gi[o] != ci[o] || gd[o] != cd[o])
          return fmt("query %lld rank %d: cuda (%lld, %.9g) cpu (%lld, %.9g)", (long long)q, j, (long long)gi[o], gd[o],
                     (long long)ci[o], cd[o]);
      } else {
        if (!close(gd[o], cd[o], 1e-4, 1e-4))
          return fmt("query %lld rank %d: distance cuda %.9g cpu %.9g", (long long)q, j, gd[o], cd[o]);
        if (gi[o] != ci[o]) {  // only a near-tie may swap
          if (gi[o] < 0 || gi[o] >= c.M) return fmt("query %lld rank %d: index %lld", (long long)q, j, (long long)gi[o]);
          const double t = true_dist(qm, bm, q, gi[o], c.D);
          if (!close(t, cd[o], 1e-4, 1e-4))
            return fmt("query %lld rank %d: cuda index %lld (true distance %.9g) cpu index %lld (%.9g)", (long long)q, j,
                       (long long)gi[o], t, (long long)ci[o], cd[o]);
        }
      }
    }
  return "";
}

// =============================================== coreset ================================================
std::string run_coreset(int64_t N, int64_t D, int64_t n, int64_t start, bool fp16, bool ints, int dup, uint32_t seed,
                        bool with_dist = true) {
  std::mt19937 g(seed);
  std::vector<float> x = ints ? rand_ints(g, N * D, -2, 2) : rand_floats(g, N * D, -1.f, 1.f);
  if (dup > 1)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t d = 0; d < D; ++d) x[r * D + d] = x[(r % ((N + dup - 1) / dup)) * D + d];
  const Mat m = make_mat(x, fp16);
  std::vector<int64_t> ci(n);
  std::vector<float> cd(n);
  const int cs = coreset_cpu(m.ptr(), fp16, N, D, n, start, ci.data(), with_dist ? cd.data() : nullptr);
  void* dx = m.to_dev();
  int64_t* di = dev_empty<int64_t>(n);
  float* dd = with_dist ? dev_empty<float>(n) : nullptr;
  const int gs = coreset_cuda(dx, fp16, N, D, n, start, di, dd, 0);
  const auto gi = host(di, n);
  const auto gd = with_dist ? host(dd, n) : std::vector<float>();
  cudaFree(dx);
  cudaFree(di);
  if (dd) cudaFree(dd);
  if (gs != cs) return fmt("status cuda %d cpu %d", gs, cs);
  if (cs != CORESET_OK) return "";
  for (int64_t s = 0; s < n; ++s) {
    if (with_dist && !(ints ? gd[s] == cd[s] : close(gd[s], cd[s], 1e-5, 1e-6)))
      return fmt("step %lld: dist cuda %.9g cpu %.9g", (long long)s, gd[s], cd[s]);
    if (gi[s] != ci[s]) {
      if (!ints && with_dist && s > 0 && close(gd[s], cd[s], 1e-5, 1e-6)) return "";  // near-tie: sequences may part
      return fmt("step %lld: index cuda %lld cpu %lld", (long long)s, (long long)gi[s], (long long)ci[s]);
    }
  }
  return "";
}

// ================================================ msgms =================================================
std::string run_msgms(int64_t B, int64_t C, int64_t H, int64_t W, int S, int k, bool half, int kind, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> x = rand_floats(g, B * C * H * W, 0.f, 1.f), y = rand_floats(g, B * C * H * W, 0.f, 1.f);
  if (kind == 1) y = x;                                         // identical images: map 0
  if (kind == 2) std::fill(x.begin(), x.end(), 0.5f);            // flat image
  if (kind == 3)                                                 // smooth images, a local defect
    for (int64_t i = 0; i < B * C * H * W; ++i) {
      const int64_t p = i % (H * W);
      x[i] = 0.5f + 0.4f * std::sin(0.3f * (float)(p % W)) * std::cos(0.2f * (float)(p / W));
      y[i] = x[i] + ((p / W > H / 3 && p / W < H / 2 && p % W > W / 4 && p % W < W / 2) ? 0.3f : 0.f);
    }
  const Mat xm = make_mat(x, half), ym = make_mat(y, half);
  std::vector<float> co(B * H * W);
  const float c = 0.0026f;
  const int cs = msgms_cpu(xm.ptr(), ym.ptr(), half, B, C, H, W, S, c, k, co.data());
  if (cs) return fmt("msgms_cpu status %d", cs);
  void* dx = xm.to_dev();
  void* dy = ym.to_dev();
  float* dout = dev_empty<float>(B * H * W);
  msgms_cuda(dx, dy, half, B, C, H, W, S, c, k, dout, 0);
  const auto go = host(dout, B * H * W);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dout);
  for (int64_t i = 0; i < B * H * W; ++i)
    if (!close(go[i], co[i], 1e-4, 2e-6))
      return fmt("pixel %lld (b %lld y %lld x %lld): cuda %.9g cpu %.9g", (long long)i, (long long)(i / (H * W)),
                 (long long)(i % (H * W) / W), (long long)(i % W), go[i], co[i]);
  return "";
}

// =============================================== softmask ===============================================
std::string run_softmask(int64_t B, int64_t h, int64_t w, int64_t C, int64_t Hs, int64_t Ws, bool ph, bool fh, int kind,
                         bool in_place, uint32_t seed, int64_t* cuda_status_out = nullptr) {
  std::mt19937 g(seed);
  std::vector<float> p = rand_floats(g, B * h * w, -2.f, 3.f), f = rand_floats(g, B * C * Hs * Ws, -4.f, 4.f);
  if (kind == 1) std::fill(p.begin(), p.begin() + h * w, 0.25f);  // image 0 flat: mask all ones
  if (kind == 2) p[std::min<int64_t>(B - 1, 1) * h * w + (h * w) / 2] = kNaN;
  if (kind == 3) p[0] = -kInf;
  const Mat pm = make_mat(p, ph), fm = make_mat(f, fh);
  const size_t esz = fh ? 2 : 4, total = (size_t)(B * C * Hs * Ws);
  std::vector<unsigned char> co(total * esz);
  const int64_t cs = softmask_cpu(pm.ptr(), ph, fm.ptr(), fh, co.data(), B, h, w, C, Hs, Ws);
  void* dp = pm.to_dev();
  void* df = fm.to_dev();
  void* dout = in_place ? df : fm.to_dev();
  std::string thrown;
  const int64_t gs = status_of([&] { return softmask_cuda(dp, ph, df, fh, dout, B, h, w, C, Hs, Ws, 0); }, &thrown);
  if (cuda_status_out) *cuda_status_out = gs;
  std::vector<unsigned char> go(total * esz);
  cudaMemcpy(go.data(), dout, total * esz, cudaMemcpyDeviceToHost);
  cudaFree(dp);
  cudaFree(df);
  if (!in_place) cudaFree(dout);
  if (cs >= 0 || gs != kNotReported) {
    if (gs != cs)
      return fmt("bad predictions: cpu reports image %lld, cuda %s", (long long)cs,
                 gs == kNotReported ? "reports nothing (no finite check)"
                 : gs == kNotReported - 1 ? ("throws: " + thrown).c_str()
                                          : fmt("reports %lld", (long long)gs).c_str());
    if (cs >= 0) return "";
  }
  for (size_t i = 0; i < total; ++i) {
    const float a = fh ? h2f(((uint16_t*)go.data())[i]) : ((float*)go.data())[i];
    const float b = fh ? h2f(((uint16_t*)co.data())[i]) : ((float*)co.data())[i];
    if (!(fh ? (a == b || close(a, b, 1e-3, 1e-6)) : close(a, b, 1e-6, 1e-7)))
      return fmt("element %zu: cuda %.9g cpu %.9g", i, a, b);
  }
  return "";
}

// ================================================= pro ==================================================
std::string run_pro(int64_t n, int64_t h, int64_t w, bool f64, int kind, bool curve, int64_t cap_delta, uint32_t seed,
                    double limit = 0.3) {
  std::mt19937 g(seed);
  const int64_t total = n * h * w;
  std::vector<double> s(total);
  std::vector<uint8_t> m(total, 0);
  std::uniform_int_distribution<int> q(0, 40);
  for (auto& v : s) v = q(g) / 8.0 - 1.0;  // quantised: many tied scores
  std::bernoulli_distribution coin(0.45);
  for (int64_t i = 0; i < total; ++i) m[i] = coin(g);  // intricate 8-connected components
  if (kind == 1)  // rectangles and a diagonal chain crossing nothing but corners
    for (int64_t i = 0; i < total; ++i) {
      const int64_t b = i / (h * w), y = i % (h * w) / w, x = i % w;
      m[i] = (y >= 2 && y < 5 && x >= 1 && x < 4) || (x == y + (int64_t)b) || (b == 1 && y == h - 1);
    }
  if (kind == 2) std::fill(m.begin(), m.end(), 0);  // no regions
  if (kind == 3) std::fill(m.begin(), m.end(), 1);  // no normal pixels
  if (kind == 4) s[total / 2] = std::numeric_limits<double>::quiet_NaN();
  if (kind == 5) m[total / 3] = 2;
  if (kind == 6) s[total - 1] = -std::numeric_limits<double>::infinity(), m[total / 3] = 7;
  if (kind == 7)  // continuous scores: no ties
    for (auto& v : s) v = std::uniform_real_distribution<double>(0, 1)(g);
  std::vector<float> sf(s.begin(), s.end());
  const void* sp = f64 ? (const void*)s.data() : (const void*)sf.data();
  const size_t sb = f64 ? total * 8 : total * 4;
  const int64_t cap = curve ? std::max<int64_t>(1, total + 1 + cap_delta) : 0;
  std::vector<double> cf(cap), cp(cap), ct(cap), gf(cap), gp(cap), gt(cap);
  const pro::Result cr = pro::pro_curve_cpu(sp, f64, m.data(), n, h, w, limit, curve ? cf.data() : nullptr,
                                            curve ? cp.data() : nullptr, curve ? ct.data() : nullptr, cap);
  void* ds = nullptr;
  cudaMalloc(&ds, sb);
  cudaMemcpy(ds, sp, sb, cudaMemcpyHostToDevice);
  uint8_t* dm = dev(m);
  const pro::Result gr = pro::pro_curve_cuda(ds, f64, dm, n, h, w, limit, curve ? gf.data() : nullptr,
                                             curve ? gp.data() : nullptr, curve ? gt.data() : nullptr, cap, 0);
  cudaFree(ds);
  cudaFree(dm);
  if (gr.status != cr.status) return fmt("status cuda %d cpu %d", gr.status, cr.status);
  if (cr.status == pro::kNonFiniteScore || cr.status == pro::kBadMask) {
    if (gr.bad_index != cr.bad_index || !(gr.bad_value == cr.bad_value || (std::isnan(gr.bad_value) && std::isnan(cr.bad_value))))
      return fmt("bad value: cuda (%lld, %g) cpu (%lld, %g)", (long long)gr.bad_index, gr.bad_value,
                 (long long)cr.bad_index, cr.bad_value);
    return "";
  }
  // kCapacity: the CPU sweep stops at the first point that does not fit and reports the upper bound
  // n*h*w + 1; the CUDA path knows the exact count. Both must exceed the capacity; CUDA's must not exceed the CPU's.
  if (cr.status == pro::kCapacity)
    return gr.bad_index > cap && gr.bad_index <= cr.bad_index
               ? ""
               : fmt("capacity %lld: cuda needs %lld, cpu %lld", (long long)cap, (long long)gr.bad_index, (long long)cr.bad_index);
  if (cr.status != pro::kOk) return "";
  if (gr.n_regions != cr.n_regions) return fmt("regions cuda %lld cpu %lld", (long long)gr.n_regions, (long long)cr.n_regions);
  if (gr.n_normal != cr.n_normal) return fmt("normal pixels cuda %lld cpu %lld", (long long)gr.n_normal, (long long)cr.n_normal);
  if (!close(gr.aupro, cr.aupro, 1e-9, 1e-12)) return fmt("aupro cuda %.15g cpu %.15g", gr.aupro, cr.aupro);
  if (curve) {
    if (gr.n_points != cr.n_points) return fmt("points cuda %lld cpu %lld", (long long)gr.n_points, (long long)cr.n_points);
    for (int64_t j = 0; j < cr.n_points; ++j)
      if (!close(gf[j], cf[j], 1e-12, 0) || !close(gp[j], cp[j], 1e-9, 1e-12) || !(gt[j] == ct[j]))
        return fmt("point %lld: cuda (%.15g, %.15g, %g) cpu (%.15g, %.15g, %g)", (long long)j, gf[j], gp[j], gt[j], cf[j],
                   cp[j], ct[j]);
  }
  return "";
}

// ================================================ cases =================================================
struct Case {
  std::string group, name;
  std::function<std::string()> fn;
  bool check_leaks = true;
};
std::vector<Case> g_cases;
void add(const std::string& group, const std::string& name, std::function<std::string()> fn) {
  g_cases.push_back(Case{group, name, std::move(fn)});
}

void with_cc(int major, const std::function<void()>& f) {
  cudaemu::set_compute_capability(major, 0);
  f();
  cudaemu::set_compute_capability(9, 0);
}

void register_cases() {
  // ---- knn: both fp16 paths (tensor cores on cc >= 7, SIMT on cc 6) ----
  const KnnCase kc[] = {
      // Q, M, D, k, fp16, ints, given_norms, dup
      {5, 40, 7, 1, false, true, false, 0},      // bank smaller than one 64-row tile, k = 1
      {5, 40, 7, 40, false, true, true, 0},      // k = M
      {70, 300, 33, 64, false, true, false, 3},  // ties: duplicated bank rows, queries on bank rows, k = 64
      {70, 300, 33, 1, false, true, false, 3},
      {3, 1000, 40, 10, false, false, false, 0},  // random data, batch 3, many splits
      {130, 129, 17, 16, false, false, true, 0},  // sizes one past a tile
      {1, 1, 1, 1, false, true, false, 0},        // single row
      {70, 300, 33, 64, true, true, false, 3},    // fp16, ties
      {9, 200, 48, 5, true, false, false, 0},     // fp16 random
      {65, 65, 40, 1, true, true, true, 2},       // fp16, one past a tile
  };
  int i = 0;
  for (const KnnCase& c : kc) {
    const std::string nm = fmt("Q%lld_M%lld_D%lld_k%d_%s%s%s%s", (long long)c.Q, (long long)c.M, (long long)c.D, c.k,
                               c.fp16 ? "fp16" : "fp32", c.ints ? "_exact" : "_random", c.given_norms ? "_norms" : "",
                               c.dup ? "_dups" : "");
    const uint32_t seed = 100 + i++;
    add("knn", nm + (c.fp16 ? "_wmma" : ""), [c, seed] { return run_knn(c, seed); });
    if (c.fp16) {
      // Compute capability 6 (no tensor cores): the SIMT kernel on fp16 inputs. Its 28.1 KiB of static shared
      // memory plus 512 B per k of top-k lists exceed sm_6x's 48 KiB per block for k > 39, so k <= 32 here.
      KnnCase c6 = c;
      c6.k = std::min(c.k, 32);
      add("knn", fmt("Q%lld_M%lld_D%lld_k%d_fp16_simt_cc6", (long long)c.Q, (long long)c.M, (long long)c.D, c6.k), [c6, seed] {
        std::string r;
        with_cc(6, [&] { r = run_knn(c6, seed); });
        return r;
      });
    }
  }
  // GEMM path (csrc/common/cublas_gemm.cu + the cuBLAS stand-in fake_cublas.cpp, through dlopen): every case
  // above in one chunk, and in 64 x 64 chunks (EDGEAD_KNN_GEMM_BYTES=4096: several query and bank chunks,
  // lists carried from chunk to chunk, partial last chunks).
  i = 0;
  for (const KnnCase& c : kc) {
    const std::string nm = fmt("Q%lld_M%lld_D%lld_k%d_%s%s%s%s", (long long)c.Q, (long long)c.M, (long long)c.D, c.k,
                               c.fp16 ? "fp16" : "fp32", c.ints ? "_exact" : "_random", c.given_norms ? "_norms" : "",
                               c.dup ? "_dups" : "");
    const uint32_t seed = 100 + i++;
    add("knn", "gemm_" + nm, [c, seed] {
      return with_env({{"EDGEAD_KNN_CUDA_PATH", "gemm"}}, [&] { return run_knn(c, seed); });
    });
    add("knn", "gemm_chunked_" + nm, [c, seed] {
      return with_env({{"EDGEAD_KNN_CUDA_PATH", "gemm"}, {"EDGEAD_KNN_GEMM_BYTES", "4096"}},
                      [&] { return run_knn(c, seed); });
    });
  }
  add("knn", "gemm_chunked_Q200_M300_k64_fp32_exact_dups_many_splits", [] {
    // 40 SMs: more splits than bank tiles per chunk allows -> empty splits in the last chunk.
    cudaemu::set_multiprocessors(40);
    const std::string r = with_env({{"EDGEAD_KNN_CUDA_PATH", "gemm"}, {"EDGEAD_KNN_GEMM_BYTES", "65536"}},
                                   [] { return run_knn(KnnCase{200, 300, 9, 64, false, true, false, 3}, 130); });
    cudaemu::set_multiprocessors(2);
    return r;
  });
  add("knn", "auto_takes_gemm_at_2^24_multiply_adds", [] {
    const int before = cudaemu::kernel_launches("knn_fold_gemm_kernel");
    const std::string r = run_knn(KnnCase{64, 4096, 64, 2, false, true, false, 0}, 131);
    if (!r.empty()) return r;
    return cudaemu::kernel_launches("knn_fold_gemm_kernel") > before ? std::string()
                                                                     : std::string("auto did not take the GEMM path");
  });
  add("knn", "fused_below_2^24_multiply_adds", [] {
    const int before = cudaemu::kernel_launches("knn_fold_gemm_kernel");
    const std::string r = run_knn(KnnCase{64, 4095, 64, 2, false, true, false, 0}, 132);
    if (!r.empty()) return r;
    return cudaemu::kernel_launches("knn_fold_gemm_kernel") == before ? std::string()
                                                                      : std::string("auto took the GEMM path below the threshold");
  });
  add("knn", "bad_EDGEAD_KNN_CUDA_PATH_is_an_error_naming_it", [] {
    std::vector<float> q(2 * 8, 0.5f), b(100 * 8, 1.f);
    float* dq = dev(q);
    float* db = dev(b);
    float* dd = dev_empty<float>(2);
    int64_t* di = dev_empty<int64_t>(2);
    const std::string r = with_env({{"EDGEAD_KNN_CUDA_PATH", "cublas"}}, [&] {
      try {
        knn_cuda(dq, db, false, nullptr, 2, 100, 8, 1, dd, di, 0);
      } catch (const std::invalid_argument& e) {
        return std::string(e.what()).find("EDGEAD_KNN_CUDA_PATH") != std::string::npos ? std::string()
                                                                                       : std::string("message: ") + e.what();
      }
      return std::string("EDGEAD_KNN_CUDA_PATH=cublas was accepted");
    });
    cudaFree(dq), cudaFree(db), cudaFree(dd), cudaFree(di);
    return r;
  });
  add("knn", "Q1_M2200_D8_k3_fp32_exact_35_splits_40_sms", [] {
    // Many SMs, one query tile: 35 bank splits, more than the finish kernel's 32 lanes (lanes own 2 splits).
    cudaemu::set_multiprocessors(40);
    const std::string r = run_knn(KnnCase{1, 2200, 8, 3, false, true, false, 2}, 120);
    cudaemu::set_multiprocessors(2);
    return r;
  });
  add("knn", "k64_fp16_on_cc6_is_rejected_not_launched", [] {
    // 48 KiB per block on sm_6x: the SIMT tile + 64 top-k lists do not fit; knn_cuda must say so
    // (std::invalid_argument naming k) instead of failing the launch.
    std::vector<uint16_t> q(2 * 8, f2h(0.5f)), b(100 * 8, f2h(1.f));
    uint16_t* dq = dev(q);
    uint16_t* db = dev(b);
    float* dd = dev_empty<float>(2 * 64);
    int64_t* di = dev_empty<int64_t>(2 * 64);
    std::string r = "knn_cuda accepted k = 64 on compute capability 6.0";
    with_cc(6, [&] {
      try {
        knn_cuda(dq, db, true, nullptr, 2, 100, 8, 64, dd, di, 0);
      } catch (const std::invalid_argument& e) {
        r = std::string(e.what()).find("'k'") != std::string::npos ? "" : std::string("message: ") + e.what();
      }
    });
    cudaFree(dq), cudaFree(db), cudaFree(dd), cudaFree(di);
    return r;
  });
  // ---- coreset ----
  add("coreset", "N50_D5_n20_dups_exact_fp32", [] { return run_coreset(50, 5, 20, 0, false, true, 4, 1); });
  add("coreset", "N50_D5_n50_all_repeats_fp16", [] { return run_coreset(50, 5, 50, 3, true, true, 4, 2); });
  add("coreset", "N300_D33_n25_random_fp32", [] { return run_coreset(300, 33, 25, 7, false, false, 0, 3); });
  add("coreset", "N300_D33_n25_random_fp16_odd_D", [] { return run_coreset(300, 33, 25, 7, true, false, 0, 4); });
  add("coreset", "N257_D32_n30_fp16_half2", [] { return run_coreset(257, 32, 30, 256, true, false, 0, 5); });
  add("coreset", "N1000_D8_n12_exact_no_dist", [] { return run_coreset(1000, 8, 12, 999, false, true, 0, 6, false); });
  add("coreset", "resumable_steps_in_chunks_match_one_shot", [] {
    // coreset_cuda_init + coreset_cuda_steps in uneven chunks == coreset_cpu in one call (duplicates: ties).
    const int64_t N = 120, D = 6, n = 37, start = 5;
    std::mt19937 g(8);
    std::vector<float> x = rand_ints(g, N * D, -2, 2);
    for (int64_t r = 60; r < N; ++r)
      for (int64_t d = 0; d < D; ++d) x[r * D + d] = x[(r - 60) * D + d];
    std::vector<int64_t> ci(n);
    std::vector<float> cd(n);
    if (coreset_cpu(x.data(), false, N, D, n, start, ci.data(), cd.data()) != CORESET_OK) return std::string("cpu status");
    float* dx = dev(x);
    float* dmin = dev_empty<float>(N);
    int64_t* di = dev_empty<int64_t>(n);
    float* dd = dev_empty<float>(n);
    const int st = coreset_cuda_check(dx, false, N, D, 0);
    coreset_cuda_init(N, start, dmin, di, dd, 0);
    const int64_t cuts[] = {1, 2, 9, 10, 30, n};
    for (int c = 0; c + 1 < 6; ++c) coreset_cuda_steps(dx, false, N, D, cuts[c], cuts[c + 1], dmin, di, dd, 0);
    const auto gi = host(di, n);
    const auto gd = host(dd, n);
    cudaFree(dx), cudaFree(dmin), cudaFree(di), cudaFree(dd);
    if (st != CORESET_OK) return fmt("coreset_cuda_check status %d", st);
    for (int64_t s = 0; s < n; ++s)
      if (gi[s] != ci[s] || gd[s] != cd[s])
        return fmt("step %lld: cuda (%lld, %g) cpu (%lld, %g)", (long long)s, (long long)gi[s], gd[s], (long long)ci[s], cd[s]);
    return std::string();
  });
  add("coreset", "N1_D3_n1_single", [] { return run_coreset(1, 3, 1, 0, false, false, 0, 7); });
  // 16-byte rows: step_vec_kernel with 8 / 16 / 32 lanes per row (vectors per row not a multiple of the
  // lanes in some), N not a multiple of the rows a warp takes per iteration, ties across groups.
  add("coreset", "vec_N301_D64_n40_fp16_exact_dups_lpr8", [] { return run_coreset(301, 64, 40, 5, true, true, 3, 8); });
  add("coreset", "vec_N203_D128_n30_fp16_random_lpr16", [] { return run_coreset(203, 128, 30, 1, true, false, 0, 9); });
  add("coreset", "vec_N97_D264_n20_fp16_exact_lpr32_uneven", [] { return run_coreset(97, 264, 20, 96, true, true, 2, 10); });
  add("coreset", "vec_N150_D32_n25_fp32_exact_dups_lpr8", [] { return run_coreset(150, 32, 25, 0, false, true, 4, 11); });
  add("coreset", "vec_N129_D68_n20_fp32_random_lpr16_uneven", [] { return run_coreset(129, 68, 20, 3, false, false, 0, 12); });
  add("coreset", "vec_N70_D128_n70_fp32_exact_all_lpr32", [] { return run_coreset(70, 128, 70, 69, false, true, 5, 13); });
  add("coreset", "N9_D4_n3_inf_input", [] {
    // status only: non-finite features
    std::vector<float> x(36, 1.f);
    x[17] = kInf;
    int64_t ci[3], gi[3];
    const int cs = coreset_cpu(x.data(), false, 9, 4, 3, 0, ci, nullptr);
    float* dx = dev(x);
    int64_t* di = dev_empty<int64_t>(3);
    const int gs = coreset_cuda(dx, false, 9, 4, 3, 0, di, nullptr, 0);
    (void)gi;
    cudaFree(dx);
    cudaFree(di);
    return gs == cs && cs == CORESET_NONFINITE ? std::string() : fmt("status cuda %d cpu %d", gs, cs);
  });
  // ---- msgms ----
  add("msgms", "B2_C3_37x45_S4_k21_fp32", [] { return run_msgms(2, 3, 37, 45, 4, 21, false, 0, 11); });
  add("msgms", "B1_C1_16x16_S1_k1_fp16", [] { return run_msgms(1, 1, 16, 16, 1, 1, true, 0, 12); });
  add("msgms", "B1_C2_8x300_S3_k63_wide", [] { return run_msgms(1, 2, 8, 300, 3, 63, false, 3, 13); });
  add("msgms", "B3_C1_33x17_S2_k5_identical", [] { return run_msgms(3, 1, 33, 17, 2, 5, false, 1, 14); });
  add("msgms", "B1_C3_40x40_S4_k7_flat_fp16", [] { return run_msgms(1, 3, 40, 40, 4, 7, true, 2, 15); });
  add("msgms", "B1_C1_1x1_S1_k1_single_pixel", [] { return run_msgms(1, 1, 1, 1, 1, 1, false, 0, 16); });
  add("msgms", "B2_C1_64x48_S4_k3_defect", [] { return run_msgms(2, 1, 64, 48, 4, 3, false, 3, 17); });
  // ---- softmask ----
  for (int ph = 0; ph < 2; ++ph)
    for (int fh = 0; fh < 2; ++fh) {
      const std::string t = std::string(ph ? "pred16" : "pred32") + (fh ? "_feat16" : "_feat32");
      add("softmask", "B3_5x7_C3_10x16_vec_" + t, [=] { return run_softmask(3, 5, 7, 3, 10, 16, ph, fh, 0, false, 20); });
      add("softmask", "B2_6x6_C2_9x15_scalar_flat_" + t,
          [=] { return run_softmask(2, 6, 6, 2, 9, 15, ph, fh, 1, false, 21); });
    }
  add("softmask", "B2_3x5_C2_6x10_rows_of_2_mod_4", [] { return run_softmask(2, 3, 5, 2, 6, 10, false, false, 0, false, 25); });
  add("softmask", "B1_1x1_C4_1x1_single_pixel", [] { return run_softmask(1, 1, 1, 4, 1, 1, false, false, 0, false, 22); });
  add("softmask", "B2_4x4_C3_8x8_in_place", [] { return run_softmask(2, 4, 4, 3, 8, 8, false, false, 0, true, 23); });
  add("softmask", "B1_64x64_C2_16x24_downscale", [] { return run_softmask(1, 64, 64, 2, 16, 24, false, true, 0, false, 24); });
  // ---- pro ----
  add("pro", "n3_37x41_random_masks_f32_curve", [] { return run_pro(3, 37, 41, false, 0, true, 0, 30); });
  add("pro", "n3_37x41_random_masks_f64_area", [] { return run_pro(3, 37, 41, true, 0, false, 0, 31); });
  add("pro", "n2_12x10_shapes_f64_curve", [] { return run_pro(2, 12, 10, true, 1, true, 0, 32, 1.0); });
  add("pro", "n4_20x33_continuous_f32_curve", [] { return run_pro(4, 20, 33, false, 7, true, 0, 33); });
  add("pro", "n2_8x8_no_regions", [] { return run_pro(2, 8, 8, false, 2, false, 0, 34); });
  add("pro", "n1_5x6_no_normal", [] { return run_pro(1, 5, 6, false, 3, true, 0, 35); });
  add("pro", "n2_9x9_nan_score", [] { return run_pro(2, 9, 9, false, 4, true, 0, 36); });
  add("pro", "n2_9x9_bad_mask", [] { return run_pro(2, 9, 9, true, 5, true, 0, 37); });
  add("pro", "n3_9x9_bad_mask_before_inf", [] { return run_pro(3, 9, 9, false, 6, true, 0, 38); });
  add("pro", "n2_16x16_capacity_too_small", [] { return run_pro(2, 16, 16, false, 0, true, -(2 * 16 * 16 - 3), 39); });
  add("pro", "n1_1x1_single_pixel", [] { return run_pro(1, 1, 1, false, 0, true, 0, 40); });
  add("pro", "n1_1x300_row", [] { return run_pro(1, 1, 300, false, 0, true, 0, 41); });

  // ---- fixes: the CUDA review's findings (issue 9, item 4); these fail on the code before the fixes ----
  add("fixes", "msgms_leaves_the_default_pool_threshold_alone", [] {
    const uint64_t before = 0;  // the CUDA default; nothing in this process asked for another value
    const std::string r = run_msgms(1, 1, 16, 16, 1, 3, false, 0, 60);
    if (!r.empty()) return r;
    const uint64_t after = cudaemu::pool_release_threshold();
    return after == before ? std::string()
                           : fmt("the device's default memory pool release threshold changed from %llu to %llu",
                                 (unsigned long long)before, (unsigned long long)after);
  });
  for (const char* path : {"fused", "gemm"}) {
  const std::string sfx = std::string("_") + path;
  add("fixes", "knn_nan_bank_row_reports_like_cpu" + sfx, [path] { return with_env({{"EDGEAD_KNN_CUDA_PATH", path}}, [] {
    std::vector<float> q(4 * 8, 0.5f), b(20 * 8, 1.f);
    for (int i = 0; i < 20 * 8; ++i) b[i] = (float)(i % 5);
    b[3 * 8 + 2] = kNaN;
    std::vector<float> cd(4 * 2);
    std::vector<int64_t> ci(4 * 2);
    const int cs = knn_cpu(q.data(), b.data(), false, nullptr, 4, 20, 8, 2, cd.data(), ci.data());
    float* dq = dev(q);
    float* db = dev(b);
    float* dd = dev_empty<float>(8);
    int64_t* di = dev_empty<int64_t>(8);
    std::string thrown;
    const int gs = status_of([&] { return knn_cuda(dq, db, false, nullptr, 4, 20, 8, 2, dd, di, 0); }, &thrown);
    const auto gi = host(di, 8);
    cudaFree(dq), cudaFree(db), cudaFree(dd), cudaFree(di);
    if (gs == cs) return std::string();
    return fmt("cpu status %d (non-finite bank); cuda %s (nearest index of query 0: %lld)", cs,
               gs == kNotReported ? "reports nothing" : gs == kNotReported - 1 ? ("throws " + thrown).c_str() : fmt("status %d", gs).c_str(),
               (long long)gi[0]);
  }); });
  add("fixes", "knn_nan_bank_row_with_given_finite_norms_reports_like_cpu" + sfx, [path] {
    return with_env({{"EDGEAD_KNN_CUDA_PATH", path}}, [] {
      std::vector<float> q(4 * 8, 0.5f), b(20 * 8, 1.f);
      for (int i = 0; i < 20 * 8; ++i) b[i] = (float)(i % 5);
      std::vector<float> norms(20);
      sq_norms_cpu(b.data(), false, 20, 8, norms.data());  // norms of the clean bank
      b[17 * 8 + 7] = -kInf;
      float* dq = dev(q);
      float* db = dev(b);
      float* dn = dev(norms);
      float* dd = dev_empty<float>(8);
      int64_t* di = dev_empty<int64_t>(8);
      std::string thrown;
      const int gs = status_of([&] { return knn_cuda(dq, db, false, dn, 4, 20, 8, 2, dd, di, 0); }, &thrown);
      cudaFree(dq), cudaFree(db), cudaFree(dn), cudaFree(dd), cudaFree(di);
      return gs == KNN_NONFINITE_BANK ? std::string() : fmt("status %d (%s), expected the non-finite bank status", gs, thrown.c_str());
    });
  });
  add("fixes", "knn_inf_query_fp16_reports_like_cpu" + sfx, [path] { return with_env({{"EDGEAD_KNN_CUDA_PATH", path}}, [] {
    std::vector<float> qv(3 * 16, 0.25f), bv(70 * 16, 1.f);
    qv[2 * 16 + 5] = kInf;
    const Mat q = make_mat(qv, true), b = make_mat(bv, true);
    std::vector<float> cd(3);
    std::vector<int64_t> ci(3);
    const int cs = knn_cpu(q.ptr(), b.ptr(), true, nullptr, 3, 70, 16, 1, cd.data(), ci.data());
    void* dq = q.to_dev();
    void* db = b.to_dev();
    float* dd = dev_empty<float>(3);
    int64_t* di = dev_empty<int64_t>(3);
    std::string thrown;
    const int gs = status_of([&] { return knn_cuda(dq, db, true, nullptr, 3, 70, 16, 1, dd, di, 0); }, &thrown);
    cudaFree(dq), cudaFree(db), cudaFree(dd), cudaFree(di);
    return gs == cs ? std::string() : fmt("cpu status %d (non-finite queries); cuda %s", cs,
                                          gs == kNotReported ? "reports nothing" : fmt("%d %s", gs, thrown.c_str()).c_str());
  }); });
  }
  add("fixes", "softmask_nan_prediction_reports_like_cpu",
      [] { return run_softmask(3, 4, 5, 2, 8, 8, false, false, 2, false, 50); });
  add("fixes", "softmask_inf_prediction_fp16_reports_like_cpu",
      [] { return run_softmask(2, 4, 5, 2, 8, 10, true, true, 3, false, 51); });
  add("fixes", "knn_frees_scratch_when_a_launch_fails", [] {
    std::vector<float> q(2 * 8, 0.5f), b(100 * 8, 1.f);
    float* dq = dev(q);
    float* db = dev(b);
    float* dd = dev_empty<float>(2 * 4);
    int64_t* di = dev_empty<int64_t>(2 * 4);
    const size_t before = cudaemu::outstanding_allocations();
    std::string err;
    for (int fail_at = 1; fail_at <= 3 && err.empty(); ++fail_at) {  // the bank norms, tile and finish launches
      cudaemu::inject_launch_failure(fail_at);
      bool threw = false;
      try {
        knn_cuda(dq, db, false, nullptr, 2, 100, 8, 4, dd, di, 0);
      } catch (const std::exception&) {
        threw = true;
      }
      cudaemu::inject_launch_failure(-1);
      const size_t after = cudaemu::outstanding_allocations();
      if (!threw) err = fmt("launch %d failed but knn_cuda did not throw", fail_at);
      else if (after != before) err = fmt("launch %d failed: %zu scratch allocation(s) leaked", fail_at, after - before);
    }
    cudaFree(dq), cudaFree(db), cudaFree(dd), cudaFree(di);
    return err;
  });
  add("fixes", "coreset_frees_scratch_when_a_launch_fails", [] {
    std::vector<float> x(64 * 4);
    for (size_t i = 0; i < x.size(); ++i) x[i] = (float)(i % 7);
    float* dx = dev(x);
    int64_t* di = dev_empty<int64_t>(5);
    const size_t before = cudaemu::outstanding_allocations();
    std::string err;
    for (int fail_at = 0; fail_at <= 3 && err.empty(); ++fail_at) {
      cudaemu::inject_launch_failure(fail_at);
      bool threw = false;
      try {
        coreset_cuda(dx, false, 64, 4, 5, 0, di, nullptr, 0);
      } catch (const std::exception&) {
        threw = true;
      }
      cudaemu::inject_launch_failure(-1);
      const size_t after = cudaemu::outstanding_allocations();
      if (!threw) err = fmt("launch %d failed but coreset_cuda did not throw", fail_at);
      else if (after != before) err = fmt("launch %d failed: %zu scratch allocation(s) leaked", fail_at, after - before);
    }
    cudaFree(dx), cudaFree(di);
    return err;
  });
  add("fixes", "msgms_and_pro_free_scratch_when_a_launch_fails", [] {
    std::vector<float> x(2 * 32 * 32, 0.3f), y(2 * 32 * 32, 0.6f);
    float* dx = dev(x);
    float* dy = dev(y);
    float* dout = dev_empty<float>(2 * 32 * 32);
    std::vector<float> s(2 * 10 * 10);
    std::vector<uint8_t> m(2 * 10 * 10);
    for (size_t i = 0; i < s.size(); ++i) s[i] = (float)(i % 13), m[i] = i % 3 == 0;
    float* ds = dev(s);
    uint8_t* dm = dev(m);
    const size_t before = cudaemu::outstanding_allocations();
    std::string err;
    for (int fail_at = 0; fail_at <= 2 && err.empty(); ++fail_at) {
      cudaemu::inject_launch_failure(fail_at);
      bool threw = false;
      try {
        msgms_cuda(dx, dy, false, 2, 1, 32, 32, 2, 0.0026f, 3, dout, 0);
      } catch (const std::exception&) {
        threw = true;
      }
      cudaemu::inject_launch_failure(-1);
      if (!threw || cudaemu::outstanding_allocations() != before) err = fmt("msgms: launch %d failed, threw %d, leaked %zu", fail_at, threw, cudaemu::outstanding_allocations() - before);
    }
    for (int fail_at = 0; fail_at <= 7 && err.empty(); ++fail_at) {
      cudaemu::inject_launch_failure(fail_at);
      bool threw = false;
      try {
        pro::pro_curve_cuda(ds, false, dm, 2, 10, 10, 0.3, nullptr, nullptr, nullptr, 0, 0);
      } catch (const std::exception&) {
        threw = true;
      }
      cudaemu::inject_launch_failure(-1);
      if (!threw || cudaemu::outstanding_allocations() != before) err = fmt("pro: launch %d failed, threw %d, leaked %zu", fail_at, threw, cudaemu::outstanding_allocations() - before);
    }
    cudaFree(dx), cudaFree(dy), cudaFree(dout), cudaFree(ds), cudaFree(dm);
    return err;
  });
}

const std::vector<std::string>& expected_kernels(const std::string& group) {
  static const std::vector<std::string> knn = {"sq_norms_kernel", "knn_tile_kernel", "knn_tile_wmma_kernel",
                                               "knn_fold_gemm_kernel", "knn_finish_kernel"};
  static const std::vector<std::string> coreset = {"nonfinite_kernel", "init_kernel", "step_kernel", "step_vec_kernel"};
  static const std::vector<std::string> msgms = {"gms_level_kernel", "combine_box_kernel"};
  static const std::vector<std::string> softmask = {"softmask_kernel"};
  static const std::vector<std::string> pro = {"validate_kernel", "merge_kernel",      "compress_kernel",
                                               "keys_kernel",     "inv_size_kernel",   "increments_kernel",
                                               "points_kernel",   "segments_kernel"};
  static const std::vector<std::string> none;
  if (group == "knn") return knn;
  if (group == "coreset") return coreset;
  if (group == "msgms") return msgms;
  if (group == "softmask") return softmask;
  if (group == "pro") return pro;
  return none;
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: %s GROUP [CASE-SUBSTRING]   (GROUP: knn coreset msgms softmask pro fixes all)\n", argv[0]);
    return 2;
  }
#ifdef CUDAEMU_FAKE_CUBLAS
  setenv("EDGEAD_CUBLAS", CUDAEMU_FAKE_CUBLAS, 0);  // the knn GEMM path loads the stand-in (unless told otherwise)
#endif
  const std::string group = argv[1];
  const std::string filter = argc > 2 ? argv[2] : "";
  register_cases();
  int run = 0, failed = 0;
  for (const Case& c : g_cases) {
    if (group != "all" && c.group != group) continue;
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    const size_t live = cudaemu::outstanding_allocations();
    std::string r;
    try {
      r = c.fn();
    } catch (const std::exception& e) {
      r = std::string("exception: ") + e.what();
    }
    if (r.empty() && cudaemu::outstanding_allocations() != live)
      r = fmt("%zu device allocation(s) not freed", cudaemu::outstanding_allocations() - live);
    if (r.empty() && cudaPeekAtLastError() != cudaSuccess) r = "sticky CUDA error left behind";
    ++run;
    if (!r.empty()) ++failed;
    printf("%s %s/%s%s%s\n", r.empty() ? "ok  " : "FAIL", c.group.c_str(), c.name.c_str(), r.empty() ? "" : ": ", r.c_str());
  }
  cudaemu::print_kernel_counts(stdout);
  if (filter.empty() && group != "all")
    for (const std::string& k : expected_kernels(group))
      if (cudaemu::kernel_launches(k.c_str()) == 0) {
        printf("FAIL %s: kernel %s never ran\n", group.c_str(), k.c_str());
        ++failed;
      }
  printf("%d case(s), %d failed\n", run, failed);
  if (run == 0) return 2;
  return failed ? 1 : 0;
}

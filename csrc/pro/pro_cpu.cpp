// PRO curve / AUPRO on the CPU.
//
// 1. Per image, in parallel: validate scores (finite) and masks ({0,1}), label 8-connected regions by
//    union-find (two-pass, link to the smaller root, so the root is the component's first pixel in
//    raster order), keep the defect pixels with their local region, and build the histogram of the
//    top 12 bits of the sort keys (descending score keys, branch-free float -> uint map).
//    The partition of images over threads is static, so results do not depend on scheduling.
// 2. Make region ids global (prefix over images) and build 1/|r| per region.
// 3. One global sort, descending: an MSD radix scatter of sort items (key, region + 1, 0 = normal)
//    on the top 12 key bits, then every bucket is sorted on the remaining bits in
//    parallel (cache-resident LSD radix, 11-bit digits, constant digits skipped). When only the area
//    is asked for, buckets past the one where the FPR reaches fpr_limit are left unsorted.
// 4. O(pixels) sweep: a normal pixel adds 1 to the false positives, a pixel of region r adds 1/|r|
//    to the PRO sum (Neumaier-compensated float64); a curve point is emitted after the last pixel of
//    each tie group; the area is integrated on the fly (and the sweep stops at fpr_limit when no
//    curve is requested).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <limits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/parallel.h"
#include "pro/pro.h"

namespace edgead {
namespace pro {
namespace {

// Order-preserving map float -> unsigned, then inverted so that ascending order = descending score.
// -0.0 is canonicalised to +0.0 so that equal scores tie.
// Branchless: scores have random signs, and a mispredicted branch per pixel costs more than the rest.
inline uint32_t desc_key(float x) {
  x = x + 0.0f;  // -0.0 + 0.0 = +0.0; every other value unchanged
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t flip = static_cast<uint32_t>(static_cast<int32_t>(u) >> 31) | 0x80000000u;
  return ~(u ^ flip);
}
inline uint64_t desc_key(double x) {
  x = x + 0.0;
  uint64_t u;
  std::memcpy(&u, &x, 8);
  const uint64_t flip = static_cast<uint64_t>(static_cast<int64_t>(u) >> 63) | 0x8000000000000000ull;
  return ~(u ^ flip);
}
inline double key_value(uint32_t d) {
  uint32_t asc = ~d;
  uint32_t u = (asc & 0x80000000u) ? (asc & 0x7fffffffu) : ~asc;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
inline double key_value(uint64_t d) {
  uint64_t asc = ~d;
  uint64_t u = (asc & 0x8000000000000000ull) ? (asc & 0x7fffffffffffffffull) : ~asc;
  double x;
  std::memcpy(&x, &u, 8);
  return x;
}

// Sort items. float32: one uint64 = key << 32 | label (label 0 = defect-free, r + 1 = region r).
struct ItemF32 {
  uint64_t v;
  uint64_t key() const { return v >> 32; }
  uint32_t label() const { return static_cast<uint32_t>(v); }
  void set(uint32_t k, uint32_t lab) { v = (static_cast<uint64_t>(k) << 32) | lab; }
  void add_label(uint32_t off) { v += off; }
  static constexpr int kKeyBits = 32;
};
struct ItemF64 {
  uint64_t k;
  uint32_t lab;
  uint32_t pad_;
  uint64_t key() const { return k; }
  uint32_t label() const { return lab; }
  void set(uint64_t kk, uint32_t l) { k = kk; lab = l; pad_ = 0; }
  void add_label(uint32_t off) { lab += off; }
  static constexpr int kKeyBits = 64;
};

template <class F>
void run_threads(int threads, F&& f) {
#ifdef EDGEAD_WITH_OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    f(omp_get_thread_num());
    return;
  }
#endif
  f(0);
}

// Large uninitialised buffer; asks for transparent huge pages (fewer page faults and TLB misses in
// the scatter).
template <class T>
struct BigBuf {
  T* p = nullptr;
  explicit BigBuf(size_t n) {
    constexpr size_t kAlign = size_t(2) << 20;
    size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    if (bytes == 0) bytes = kAlign;
    p = static_cast<T*>(std::aligned_alloc(kAlign, bytes));
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
  }
  ~BigBuf() { std::free(p); }
  BigBuf(const BigBuf&) = delete;
  BigBuf& operator=(const BigBuf&) = delete;
};

constexpr int kTopBits = 12;  // MSD digit: sign, 8 exponent bits, 3 mantissa bits for float32
constexpr int kTopBuckets = 1 << kTopBits;

template <class Item>
inline uint32_t top_digit(const Item& it) {
  return static_cast<uint32_t>(it.key() >> (Item::kKeyBits - kTopBits));
}

// Sorts a[0, n) by the low (kKeyBits - kTopBits) key bits (all items share the top digit): LSD radix
// with 11-bit digits, all digit histograms from one read, passes with a constant digit skipped;
// std::sort when small. Ties need no particular order (a curve point is read after the whole tie
// group), and everything here is deterministic. `scratch` holds at least n items.
template <class Item>
void sort_bucket(Item* a, Item* scratch, int64_t n, std::vector<int64_t>& hist) {
  if (n < 2) return;
  if (n <= 64) {
    std::sort(a, a + n, [](const Item& x, const Item& y) { return x.key() < y.key(); });
    return;
  }
  constexpr int kBits = 11, kB = 1 << kBits;
  constexpr int kLowBits = Item::kKeyBits - kTopBits;
  constexpr int kPasses = (kLowBits + kBits - 1) / kBits;
  constexpr uint64_t kMask = kB - 1;
  hist.assign(static_cast<size_t>(kPasses) * kB, 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = a[i].key();
    for (int q = 0; q < kPasses; ++q) ++hist[size_t(q) * kB + ((k >> (q * kBits)) & kMask)];
  }
  Item* src = a;
  Item* dst = scratch;
  for (int q = 0; q < kPasses; ++q) {
    int64_t* h = hist.data() + size_t(q) * kB;
    const int shift = q * kBits;
    if (h[(src[0].key() >> shift) & kMask] == n) continue;
    int64_t run = 0;
    for (int d = 0; d < kB; ++d) {
      const int64_t c = h[d];
      h[d] = run;
      run += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const Item it = src[i];
      dst[h[(it.key() >> shift) & kMask]++] = it;
    }
    std::swap(src, dst);
  }
  if (src != a) std::memcpy(static_cast<void*>(a), src, sizeof(Item) * static_cast<size_t>(n));
}

// Union-find helpers on a per-image parent array (index of parent pixel; roots point to themselves).
inline int32_t uf_find(int32_t* parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];  // path halving
    x = parent[x];
  }
  return x;
}
inline void uf_union(int32_t* parent, int32_t a, int32_t b) {
  a = uf_find(parent, a);
  b = uf_find(parent, b);
  if (a == b) return;
  if (a < b) parent[b] = a;
  else parent[a] = b;
}

struct ImageInfo {
  bool bad = false;                      // a non-finite score or a mask value > 1 (located later)
  std::vector<int64_t> sizes;            // region sizes, local region order
  std::vector<int32_t> fg_pixel, fg_label;  // defect pixels (raster order) and their local region
};

inline bool finite_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x7f800000u) != 0x7f800000u;
}
inline bool finite_bits(double x) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

// Validates and labels one image (defect pixels and their local region go to `info`), and adds
// every pixel to the thread's MSD histogram (hist) and defect pixels to hist_defect.
template <class Item, class Scalar>
void process_image(const Scalar* s, const uint8_t* m, int64_t H, int64_t W, int32_t* parent, int32_t* rlabel,
                   ImageInfo& info, int64_t* hist, int64_t* hist_defect) {
  const int64_t HW = H * W;
  // Pass 1: union with the already-visited 8-neighbours (W, NW, N, NE). Only defect pixels touch
  // `parent`.
  int64_t n_fg = 0;
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* row = m + y * W;
    const uint8_t* up = row - W;
    for (int64_t x = 0; x < W; ++x) {
      if (!row[x]) continue;
      ++n_fg;
      const int32_t p = static_cast<int32_t>(y * W + x);
      parent[p] = p;
      if (x > 0 && row[x - 1]) uf_union(parent, p, p - 1);
      if (y > 0) {
        if (x > 0 && up[x - 1]) uf_union(parent, p, static_cast<int32_t>(p - W - 1));
        if (up[x]) uf_union(parent, p, static_cast<int32_t>(p - W));
        if (x + 1 < W && up[x + 1]) uf_union(parent, p, static_cast<int32_t>(p - W + 1));
      }
    }
  }
  info.fg_pixel.reserve(static_cast<size_t>(n_fg));
  info.fg_label.reserve(static_cast<size_t>(n_fg));
  // Pass 2: validation, histogram, labels. Roots are the smallest index of their component, so
  // they are met first in raster order.
  bool ok = true;
  int32_t next = 0;
  for (int64_t p = 0; p < HW; ++p) {
    const Scalar v = s[p];
    const uint8_t mv = m[p];
    ok &= finite_bits(v) & (mv <= 1);
    const uint32_t d = static_cast<uint32_t>(desc_key(v) >> (Item::kKeyBits - kTopBits));
    ++hist[d];
    if (mv) {
      ++hist_defect[d];
      const int32_t r = uf_find(parent, static_cast<int32_t>(p));
      if (r == p) {
        rlabel[p] = next++;
        info.sizes.push_back(0);
      }
      const int32_t l = rlabel[r];
      ++info.sizes[static_cast<size_t>(l)];
      info.fg_pixel.push_back(static_cast<int32_t>(p));
      info.fg_label.push_back(l);
    }
  }
  info.bad = !ok;
}

struct Neumaier {  // compensated float64 summation
  double sum = 0.0, c = 0.0;
  void add(double x) {
    const double t = sum + x;
    if (std::fabs(sum) >= std::fabs(x)) c += (sum - t) + x;
    else c += (x - t) + sum;
    sum = t;
  }
  double value() const { return sum + c; }
};

template <class Item, class Scalar>
Result run(const Scalar* scores, const uint8_t* masks, int64_t N, int64_t H, int64_t W, double limit, double* fpr,
           double* pro, double* thr, int64_t capacity) {
  using KeyT = decltype(desc_key(Scalar()));
  Result res;
  const int64_t HW = H * W, total = N * HW;
  const int T = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cpu_threads(), N)));
  std::vector<ImageInfo> info(static_cast<size_t>(N));
  std::vector<int64_t> hist(static_cast<size_t>(T) * kTopBuckets, 0), hist_defect(hist.size(), 0);

  // 1. Validate, label, MSD histograms; thread t owns images [N t / T, N (t+1) / T).
  run_threads(T, [&](int t) {
    std::vector<int32_t> buf(static_cast<size_t>(2 * HW));
    for (int64_t i = N * t / T; i < N * (t + 1) / T; ++i)
      process_image<Item, Scalar>(scores + i * HW, masks + i * HW, H, W, buf.data(), buf.data() + HW,
                                  info[static_cast<size_t>(i)], hist.data() + size_t(t) * kTopBuckets,
                                  hist_defect.data() + size_t(t) * kTopBuckets);
  });
  for (int64_t i = 0; i < N; ++i) {
    if (!info[static_cast<size_t>(i)].bad) continue;
    const Scalar* s = scores + i * HW;
    const uint8_t* m = masks + i * HW;
    int64_t bad_score = -1, bad_mask = -1;
    for (int64_t p = 0; p < HW; ++p) {
      if (bad_score < 0 && !finite_bits(s[p])) bad_score = p;
      if (bad_mask < 0 && m[p] > 1) bad_mask = p;
    }
    if (bad_score >= 0) {
      res.status = kNonFiniteScore;
      res.bad_index = i * HW + bad_score;
      res.bad_value = static_cast<double>(s[bad_score]);
    } else {
      res.status = kBadMask;
      res.bad_index = i * HW + bad_mask;
      res.bad_value = m[bad_mask];
    }
    return res;
  }
  // 2. Global region ids and 1/|r|.
  std::vector<uint32_t> offset(static_cast<size_t>(N));
  std::vector<double> inv_size;
  int64_t defect = 0;
  for (int64_t i = 0; i < N; ++i) {
    offset[static_cast<size_t>(i)] = static_cast<uint32_t>(inv_size.size());
    for (int64_t sz : info[static_cast<size_t>(i)].sizes) {
      inv_size.push_back(1.0 / static_cast<double>(sz));
      defect += sz;
    }
  }
  res.n_regions = static_cast<int64_t>(inv_size.size());
  res.n_normal = total - defect;
  if (res.n_regions == 0) {
    res.status = kNoRegions;
    return res;
  }
  if (res.n_normal == 0) {
    res.status = kNoNormal;
    return res;
  }
  const bool curve = fpr && pro && thr;
  if (curve && capacity < 1) {
    res.status = kCapacity;
    res.bad_index = 1;
    return res;
  }
  const double n_normal = static_cast<double>(res.n_normal);

  // 3. MSD scatter on the top digit (bucket-major, thread-minor offsets), making labels global.
  std::vector<int64_t> bucket_start(kTopBuckets + 1, 0);
  int last_bucket = kTopBuckets - 1;  // buckets [0, last_bucket] are sorted and swept
  {
    int64_t run = 0, normal_run = 0;
    bool cut = false;
    for (int d = 0; d < kTopBuckets; ++d) {
      bucket_start[d] = run;
      for (int t = 0; t < T; ++t) {
        int64_t& h = hist[size_t(t) * kTopBuckets + d];
        const int64_t c = h;
        h = run;
        run += c;
        normal_run += c - hist_defect[size_t(t) * kTopBuckets + d];
      }
      // Area only: the sweep ends at the first point with fpr >= limit, which lies in this bucket.
      if (!curve && !cut && static_cast<double>(normal_run) / n_normal >= limit) {
        last_bucket = d;
        cut = true;
      }
    }
    bucket_start[kTopBuckets] = run;
  }
  // Items of buckets past last_bucket (area only) are never read: they go to the thread's trash slot
  // end + t (branch-free), so the buffer holds only the needed items.
  const int64_t end = bucket_start[last_bucket + 1];
  const uint32_t last = static_cast<uint32_t>(last_bucket);
  BigBuf<Item> sorted(static_cast<size_t>(end + T));
  run_threads(T, [&](int t) {
    int64_t* off = hist.data() + size_t(t) * kTopBuckets;
    constexpr int kShift = Item::kKeyBits - kTopBits;
    Item* out = sorted.p;
    const int64_t trash = end + t;
    auto put = [&](const Item& it) {
      const uint32_t d = static_cast<uint32_t>(it.key() >> kShift);
      const bool keep = d <= last;
      const int64_t idx = off[d];
      off[d] = idx + keep;
      out[keep ? idx : trash] = it;
    };
    for (int64_t i = N * t / T; i < N * (t + 1) / T; ++i) {
      const Scalar* s = scores + i * HW;
      const uint8_t* m = masks + i * HW;
      for (int64_t p = 0; p < HW; ++p) {
        if (m[p]) continue;
        Item it;
        it.set(desc_key(s[p]), 0);
        put(it);
      }
      const ImageInfo& in = info[static_cast<size_t>(i)];
      const uint32_t loff = offset[static_cast<size_t>(i)] + 1;
      for (size_t k = 0; k < in.fg_pixel.size(); ++k) {
        Item it;
        it.set(desc_key(s[in.fg_pixel[k]]), static_cast<uint32_t>(in.fg_label[k]) + loff);
        put(it);
      }
    }
  });
  info.clear();
  info.shrink_to_fit();
  // 4. Sort every needed bucket on the remaining bits.
  {
    const int64_t nb = last_bucket + 1;
    const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cpu_threads(), nb)));
    (void)threads;
#ifdef EDGEAD_WITH_OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
      std::vector<int64_t> lh;
      std::vector<Item> scratch;
#ifdef EDGEAD_WITH_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
      for (int64_t d = 0; d < nb; ++d) {
        const int64_t b = bucket_start[d], e = bucket_start[d + 1];
        if (e - b > 64 && scratch.size() < static_cast<size_t>(e - b)) scratch.resize(static_cast<size_t>(e - b));
        sort_bucket(sorted.p + b, scratch.data(), e - b, lh);
      }
    }
  }

  // 5. Sweep.
  const double inv_regions = 1.0 / static_cast<double>(res.n_regions);
  if (curve) {
    fpr[0] = 0.0;
    pro[0] = 0.0;
    thr[0] = std::numeric_limits<double>::infinity();
  }
  int64_t np = 1;
  double pf = 0.0, pp = 0.0, area = 0.0;
  int64_t fp = 0;
  Neumaier psum;
  const double* inv = inv_size.data();
  const Item* a = sorted.p;
  for (int64_t i = 0; i < end; ++i) {
    const Item it = a[i];
    const uint32_t lab = it.label();
    if (lab) psum.add(inv[lab - 1]);
    else ++fp;
    if (i + 1 == end || a[i + 1].key() != it.key()) {
      const double f = static_cast<double>(fp) / n_normal;
      const double p = psum.value() * inv_regions;
      area += segment_area(pf, pp, f, p, limit);
      if (curve) {
        if (np >= capacity) {
          res.status = kCapacity;
          res.bad_index = total + 1;
          return res;
        }
        fpr[np] = f;
        pro[np] = p;
        thr[np] = key_value(static_cast<KeyT>(it.key()));
      } else if (f >= limit) {
        break;
      }
      ++np;
      pf = f;
      pp = p;
    }
  }
  res.n_points = curve ? np : 0;
  res.aupro = area / limit;
  return res;
}

}  // namespace

Result pro_curve_cpu(const void* scores, bool is_f64, const uint8_t* masks, int64_t n, int64_t h, int64_t w,
                     double fpr_limit, double* fpr, double* pro, double* thr, int64_t capacity) {
  if (is_f64)
    return run<ItemF64, double>(static_cast<const double*>(scores), masks, n, h, w, fpr_limit, fpr, pro, thr, capacity);
  return run<ItemF32, float>(static_cast<const float*>(scores), masks, n, h, w, fpr_limit, fpr, pro, thr, capacity);
}

}  // namespace pro
}  // namespace edgead

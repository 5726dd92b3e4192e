// cudaemu stand-in for mma.h: nvcuda::wmma at tile level. Every lane holds the whole tile; every call is a
// warp rendezvous (all 32 lanes, same pointer, ldm and layout: anything else is reported), loads and stores
// read/write exactly the tile's elements through `ldm` (so layout, ldm and pointer bugs show as wrong
// results or ASan reports), mma_sync accumulates in fp32 in k order. Pointers must be 32-byte aligned and
// ldm a multiple of 16 bytes, as the CUDA Programming Guide requires.
#pragma once
#include <cstdint>

#include "../cudaemu.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static constexpr int R = M, C = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static constexpr int R = K, C = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static constexpr int R = M, C = N;
};
inline float tof(float v) { return v; }
inline float tof(__half v) { return __half2float(v); }
template <class T>
inline T fromf(float v);
template <>
inline float fromf<float>(float v) { return v; }
template <>
inline __half fromf<__half>(float v) { return __float2half_rn(v); }
enum Sub { LOAD_A = 1, LOAD_B, LOAD_C, STORE, MMA, FILL };
inline void sync(const char* file, int line, int sub, const void* p, unsigned ldm, int layout) {
  cudaemu::warp_op(file, line, cudaemu::OP_WMMA, 0xffffffffu, 0, 0, sub, 32, reinterpret_cast<uint64_t>(p),
                   (uint64_t)ldm | ((uint64_t)layout << 32));
}
inline void check_ptr(const char* file, int line, const void* p, unsigned ldm, unsigned esize, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    cudaemu::fail(file, line, "wmma::%s: pointer %p is not 256-bit (32-byte) aligned", what, p);
  if ((ldm * esize) % 16 != 0)
    cudaemu::fail(file, line, "wmma::%s: ldm %u is not a multiple of 16 bytes (%u-byte elements)", what, ldm, esize);
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int R = detail::shape<Use, M, N, K>::R, C = detail::shape<Use, M, N, K>::C;
  static constexpr int num_elements = R * C;
  T x[R * C];  // the whole tile, row-major (emulator representation)
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, T v, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  detail::sync(file, line, detail::FILL, nullptr, 0, 0);
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}
template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE(), typename std::enable_if<!std::is_same<T, float>::value>::type* = 0) {
  fill_fragment(f, detail::fromf<T>(v), file, line);
}

// matrix_a / matrix_b: the layout is the fragment's.
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(!std::is_same<Use, accumulator>::value, "accumulator loads take a layout");
  const bool rm = std::is_same<L, row_major>::value;
  detail::sync(file, line, std::is_same<Use, matrix_a>::value ? detail::LOAD_A : detail::LOAD_B, p, ldm, rm);
  detail::check_ptr(file, line, p, ldm, sizeof(T), "load_matrix_sync");
  typedef fragment<Use, M, N, K, T, L> F;
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::C; ++c) f.x[r * F::C + c] = rm ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t layout,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::sync(file, line, detail::LOAD_C, p, ldm, layout);
  detail::check_ptr(file, line, p, ldm, sizeof(T), "load_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      f.x[r * N + c] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout,
                              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::sync(file, line, detail::STORE, p, ldm, layout);
  detail::check_ptr(file, line, p, ldm, sizeof(T), "store_matrix_sync");
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      T* q = layout == mem_row_major ? p + (size_t)r * ldm + c : p + (size_t)c * ldm + r;
      if (cudaemu::lane_id() == 0)
        *q = f.x[r * N + c];
      else
        (void)*static_cast<volatile T*>(q);  // every lane touches the tile (ASan sees overruns from any lane)
    }
}
template <int M, int N, int K, class TA, class LA, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  detail::sync(file, line, detail::MMA, nullptr, 0, 0);
  float fa[M * K], fb[K * N];
  for (int i = 0; i < M * K; ++i) fa[i] = detail::tof(a.x[i]);
  for (int i = 0; i < K * N; ++i) fb[i] = detail::tof(b.x[i]);
  TC out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = detail::tof(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) s += fa[i * K + k] * fb[k * N + j];  // fp16 x fp16 products are exact in fp32
      out[i * N + j] = detail::fromf<TC>(s);
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda

// cudaemu stand-in for cuda_fp16.h: __half / __half2 as IEEE binary16 bits; conversions round to nearest
// even through the compiler's _Float16 (bit-exact with the GPU's cvt.rn.f16.f32).
#pragma once
#include <cstdint>
#include <cstring>

#include "../cudaemu.h"

struct __half {
  unsigned short __x;
};
struct __half2 {
  __half x, y;
};
typedef __half half;
typedef __half2 half2;

inline __half __float2half_rn(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  __half r;
  std::memcpy(&r.__x, &h, 2);
  return r;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.__x, 2);
  return static_cast<float>(v);
}
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __float2half2_rn(float a) { return __half2{__float2half_rn(a), __float2half_rn(a)}; }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline float2 __half22float2(__half2 v) { return float2{__half2float(v.x), __half2float(v.y)}; }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
inline bool __hisnan(__half h) { return (h.__x & 0x7c00) == 0x7c00 && (h.__x & 0x3ff); }
inline bool __hisinf(__half h) { return (h.__x & 0x7fff) == 0x7c00; }
inline __half __hadd(__half a, __half b) { return __float2half_rn(__half2float(a) + __half2float(b)); }
inline __half __hmul(__half a, __half b) { return __float2half_rn(__half2float(a) * __half2float(b)); }
inline __half __hsub(__half a, __half b) { return __float2half_rn(__half2float(a) - __half2float(b)); }

// cudaemu stand-in for CUB's device-wide primitives used by edgead, mapped to std algorithms with CUB's
// protocol: a call with d_temp_storage == nullptr only reports temp_storage_bytes; a real call checks that
// the temp buffer is a live device allocation at least that large (and writes all of it, so an undersized
// buffer shows under ASan). DeviceRadixSort with DoubleBuffer always writes the sorted data to the
// alternate buffers, flips the selectors and poisons the old ones (reading the wrong half shows).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "../../cudaemu.h"

namespace cub {

template <class T>
struct DoubleBuffer {
  T* d_buffers[2];
  int selector;
  DoubleBuffer() : d_buffers{nullptr, nullptr}, selector(0) {}
  DoubleBuffer(T* current, T* alternate) : d_buffers{current, alternate}, selector(0) {}
  T* Current() { return d_buffers[selector]; }
  T* Alternate() { return d_buffers[selector ^ 1]; }
};

namespace detail {
cudaError_t temp_check(const char* what, void* d_temp, size_t bytes, size_t need);
template <class It>
inline void check_dev(const char* what, It p) {
  (void)what;
  (void)p;
}
template <class T>
inline void check_dev(const char* what, T* p) {
  if (!cudaemu::is_device_pointer(p)) cudaemu::fail(__FILE__, __LINE__, "cub::%s: %p is not device memory", what, (const void*)p);
}
inline size_t need_bytes(long long n, size_t item) { return 256 + (size_t)(n > 0 ? n : 0) * item / 4; }
}  // namespace detail

struct DeviceScan {
  template <class In, class Out, class NumT>
  static cudaError_t ExclusiveSum(void* d_temp, size_t& bytes, In in, Out out, NumT n, cudaStream_t = nullptr) {
    typedef typename std::decay<decltype(*out)>::type V;
    const size_t need = detail::need_bytes(n, sizeof(V));
    if (!d_temp) {
      bytes = need;
      return cudaSuccess;
    }
    if (cudaError_t e = detail::temp_check("DeviceScan::ExclusiveSum", d_temp, bytes, need)) return e;
    detail::check_dev("DeviceScan::ExclusiveSum in", in);
    detail::check_dev("DeviceScan::ExclusiveSum out", out);
    V acc = V();
    for (long long i = 0; i < (long long)n; ++i) {
      const V v = in[i];
      out[i] = acc;
      acc = acc + v;
    }
    return cudaSuccess;
  }
  template <class In, class Out, class NumT>
  static cudaError_t InclusiveSum(void* d_temp, size_t& bytes, In in, Out out, NumT n, cudaStream_t = nullptr) {
    typedef typename std::decay<decltype(*out)>::type V;
    const size_t need = detail::need_bytes(n, sizeof(V));
    if (!d_temp) {
      bytes = need;
      return cudaSuccess;
    }
    if (cudaError_t e = detail::temp_check("DeviceScan::InclusiveSum", d_temp, bytes, need)) return e;
    detail::check_dev("DeviceScan::InclusiveSum in", in);
    detail::check_dev("DeviceScan::InclusiveSum out", out);
    V acc = V();
    for (long long i = 0; i < (long long)n; ++i) {
      acc = acc + static_cast<V>(in[i]);
      out[i] = acc;
    }
    return cudaSuccess;
  }
};

struct DeviceReduce {
  template <class In, class Out, class NumT>
  static cudaError_t Sum(void* d_temp, size_t& bytes, In in, Out out, NumT n, cudaStream_t = nullptr) {
    typedef typename std::decay<decltype(*out)>::type V;
    const size_t need = detail::need_bytes(n, sizeof(V));
    if (!d_temp) {
      bytes = need;
      return cudaSuccess;
    }
    if (cudaError_t e = detail::temp_check("DeviceReduce::Sum", d_temp, bytes, need)) return e;
    detail::check_dev("DeviceReduce::Sum in", in);
    detail::check_dev("DeviceReduce::Sum out", out);
    // CUB reduces in a tree; pairwise summation is closer to that than a left fold.
    std::vector<V> v((size_t)(n > 0 ? n : 0));
    for (long long i = 0; i < (long long)n; ++i) v[(size_t)i] = in[i];
    size_t len = v.size();
    while (len > 1) {
      const size_t half = (len + 1) / 2;
      for (size_t i = 0; i + half < len; ++i) v[i] = v[i] + v[i + half];
      len = half;
    }
    *out = v.empty() ? V() : v[0];
    return cudaSuccess;
  }
};

struct DeviceRadixSort {
  template <class K, class V, class NumT>
  static cudaError_t SortPairs(void* d_temp, size_t& bytes, DoubleBuffer<K>& keys, DoubleBuffer<V>& vals, NumT n,
                               int begin_bit = 0, int end_bit = sizeof(K) * 8, cudaStream_t = nullptr) {
    const size_t need = detail::need_bytes(n, 1);
    if (!d_temp) {
      bytes = need;
      return cudaSuccess;
    }
    if (cudaError_t e = detail::temp_check("DeviceRadixSort::SortPairs", d_temp, bytes, need)) return e;
    const K* kin = keys.Current();
    const V* vin = vals.Current();
    K* kout = keys.Alternate();
    V* vout = vals.Alternate();
    detail::check_dev("DeviceRadixSort keys", kin);
    detail::check_dev("DeviceRadixSort keys alternate", kout);
    detail::check_dev("DeviceRadixSort values", vin);
    detail::check_dev("DeviceRadixSort values alternate", vout);
    const size_t cnt = (size_t)(n > 0 ? n : 0);
    std::vector<size_t> order(cnt);
    std::iota(order.begin(), order.end(), size_t(0));
    const int bits = end_bit - begin_bit;
    auto key_bits = [&](K k) -> unsigned long long {
      unsigned long long u = (unsigned long long)k >> begin_bit;
      if (bits < 64) u &= (1ull << bits) - 1;
      return u;
    };
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key_bits(kin[a]) < key_bits(kin[b]); });
    for (size_t i = 0; i < cnt; ++i) {
      kout[i] = kin[order[i]];
      vout[i] = vin[order[i]];
    }
    std::memset(static_cast<void*>(keys.Current()), 0xA5, cnt * sizeof(K));  // contents undefined after the sort
    std::memset(static_cast<void*>(vals.Current()), 0xA5, cnt * sizeof(V));
    keys.selector ^= 1;
    vals.selector ^= 1;
    return cudaSuccess;
  }
};

}  // namespace cub

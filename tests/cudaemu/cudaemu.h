// cudaemu: a small CUDA emulator for tests (never shipped). The unmodified csrc/*/*_cuda.cu files compile
// as C++ against the stand-in headers in include/ (after rewrite_cu.py turned `k<<<...>>>(...)` into a
// launch call and `extern __shared__` into the per-block dynamic buffer) and run on the CPU:
//   - every CUDA thread is a fiber on the one OS thread; blocks run one after another;
//   - __syncthreads[_count|_or|_and] release when every live thread of the block waits at the same call site;
//   - warp ops rendezvous per warp with CUDA's 32-lane semantics (masks, width, exited lanes);
//   - each diagnostic prints "file:line: cudaemu error: ..." and exits the process with status 86.
// Semantics follow the CUDA C++ Programming Guide and the PTX ISA (shfl.sync, vote.sync, match.sync).
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers -------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define __constant__ static
#define __managed__

// ---- vector and index types -----------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 {
  float x, y;
};
struct float4 {
  float x, y, z, w;
};
struct int2 {
  int x, y;
};

extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
static constexpr int warpSize = 32;

// ---- runtime types ----------------------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorLaunchOutOfResources = 701,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
struct CUmemPoolHandle_st;
typedef CUmemPoolHandle_st* cudaMemPool_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMemoryPoolsSupported = 115,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaMemPoolAttr {
  cudaMemPoolReuseFollowEventDependencies = 1,
  cudaMemPoolReuseAllowOpportunistic = 2,
  cudaMemPoolReuseAllowInternalDependencies = 3,
  cudaMemPoolAttrReleaseThreshold = 4,
};
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
enum cudaMemAllocationType { cudaMemAllocationTypeInvalid = 0, cudaMemAllocationTypePinned = 1 };
enum cudaMemAllocationHandleType { cudaMemHandleTypeNone = 0, cudaMemHandleTypePosixFileDescriptor = 1 };
enum cudaMemLocationType { cudaMemLocationTypeInvalid = 0, cudaMemLocationTypeDevice = 1 };
struct cudaMemLocation {
  cudaMemLocationType type;
  int id;
};
struct cudaMemPoolProps {
  cudaMemAllocationType allocType;
  cudaMemAllocationHandleType handleTypes;
  cudaMemLocation location;
  void* win32SecurityAttributes;
  size_t maxSize;
  unsigned short usage;
  unsigned char reserved[54];
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
};
#define cudaStreamNonBlocking 0x01
#define cudaStreamDefault 0x00
#define CUDART_VERSION 13000

// ---- emulator core ----------------------------------------------------------------------------------
namespace cudaemu {

enum WarpOp : int {
  OP_SHFL_IDX,
  OP_SHFL_UP,
  OP_SHFL_DOWN,
  OP_SHFL_XOR,
  OP_BALLOT,
  OP_MATCH_ANY,
  OP_SYNCWARP,
  OP_WMMA,
};
enum BarrierKind : int { BAR_SYNC, BAR_COUNT, BAR_OR, BAR_AND };

[[noreturn]] void fail(const char* file, int line, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
bool in_kernel();
int block_barrier(const char* file, int line, int kind, int pred);
// A warp rendezvous: returns this lane's result. a1/a2 are op arguments every lane must agree on (WMMA).
uint64_t warp_op(const char* file, int line, int op, unsigned mask, uint64_t value, unsigned value_size, int b,
                 int width, uint64_t a1 = 0, uint64_t a2 = 0);
void maybe_yield();  // at atomics and fences under the random schedule
void* dynamic_smem();
void shared_decl(void* p, size_t bytes);  // a static __shared__ variable: poisoned when a new block reaches it
unsigned lane_id();

typedef void (*ThreadFn)(void*);
void launch(const char* name, const char* file, int line, const void* func, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, ThreadFn fn, void* ctx);

template <class... P>
struct Launcher {
  const char* name;
  const char* file;
  int line;
  void (*k)(P...);
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  void operator()(P... a) const {
    struct Ctx {
      void (*k)(P...);
      std::tuple<P...> args;
    } ctx{k, std::tuple<P...>(a...)};
    launch(name, file, line, reinterpret_cast<const void*>(k), grid, block, smem, stream,
           [](void* c) {
             Ctx* x = static_cast<Ctx*>(c);
             std::apply(x->k, x->args);  // every thread gets its own copy of the parameters
           },
           &ctx);
  }
};
template <class... P>
Launcher<P...> make_launcher(const char* name, const char* file, int line, void (*k)(P...), dim3 grid, dim3 block,
                             size_t smem = 0, cudaStream_t stream = nullptr) {
  return Launcher<P...>{name, file, line, k, grid, block, smem, stream};
}

// ---- configuration and bookkeeping for tests ----
void set_compute_capability(int major, int minor);
void set_multiprocessors(int sms);  // cudaDevAttrMultiProcessorCount (default 2; env CUDAEMU_SMS)
void set_schedule(const char* spec);  // "forward", "reverse", "random:SEED" (also env CUDAEMU_SCHEDULE)
void set_strict(bool on);             // also env CUDAEMU_STRICT=1
void set_timeout_s(unsigned s);       // per launch (also env CUDAEMU_TIMEOUT_S; default 60)
size_t outstanding_allocations();     // live cudaMalloc/cudaMallocAsync allocations
long kernel_launches(const char* base_name);
void print_kernel_counts(FILE* f);
bool is_device_pointer(const void* p);
uint64_t pool_release_threshold();  // of the device's default pool
// Fault injection for error-path tests: the launch `after` launches from now fails with
// cudaErrorLaunchOutOfResources (reported through cudaGetLastError, like a real launch failure). -1 = off.
void inject_launch_failure(int after);

}  // namespace cudaemu

// ---- device built-ins -------------------------------------------------------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  cudaemu::block_barrier(file, line, cudaemu::BAR_SYNC, 0);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return cudaemu::block_barrier(file, line, cudaemu::BAR_COUNT, pred != 0);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return cudaemu::block_barrier(file, line, cudaemu::BAR_OR, pred != 0);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return cudaemu::block_barrier(file, line, cudaemu::BAR_AND, pred != 0);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  cudaemu::warp_op(file, line, cudaemu::OP_SYNCWARP, mask, 0, 0, 0, 32);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return (unsigned)cudaemu::warp_op(file, line, cudaemu::OP_BALLOT, mask, pred != 0, 1, 0, 32);
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, pred, file, line) != 0;
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return __ballot_sync(mask, !pred, file, line) == 0;
}

namespace cudaemu {
template <class T>
inline T shfl(const char* file, int line, int op, unsigned mask, T var, int b, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "cudaemu: shuffle of an unsupported type");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  const uint64_t r = warp_op(file, line, op, mask, bits, sizeof(T), b, width);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}
}  // namespace cudaemu

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  return cudaemu::shfl(file, line, cudaemu::OP_SHFL_IDX, mask, var, srcLane, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  return cudaemu::shfl(file, line, cudaemu::OP_SHFL_UP, mask, var, (int)delta, width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  return cudaemu::shfl(file, line, cudaemu::OP_SHFL_DOWN, mask, var, (int)delta, width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  return cudaemu::shfl(file, line, cudaemu::OP_SHFL_XOR, mask, var, laneMask, width);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "cudaemu: __match_any_sync takes 32- or 64-bit values");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return (unsigned)cudaemu::warp_op(file, line, cudaemu::OP_MATCH_ANY, mask, bits, sizeof(T), 0, 32);
}
unsigned __activemask();

inline void __threadfence() { cudaemu::maybe_yield(); }
inline void __threadfence_block() { cudaemu::maybe_yield(); }
inline void __threadfence_system() { cudaemu::maybe_yield(); }
inline void __nanosleep(unsigned) { cudaemu::maybe_yield(); }

template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline T __ldca(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline void __stcg(T* p, T v) { *p = v; }

namespace cudaemu {
template <class To, class From>
inline To bitcast(From f) {
  static_assert(sizeof(To) == sizeof(From), "size");
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}
}  // namespace cudaemu
inline float __int_as_float(int x) { return cudaemu::bitcast<float>(x); }
inline int __float_as_int(float x) { return cudaemu::bitcast<int>(x); }
inline float __uint_as_float(unsigned x) { return cudaemu::bitcast<float>(x); }
inline unsigned __float_as_uint(float x) { return cudaemu::bitcast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return cudaemu::bitcast<double>(x); }
inline long long __double_as_longlong(double x) { return cudaemu::bitcast<long long>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }

// CUDA's unqualified integer/float min and max (device overloads; same-type arguments).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---- atomics (one OS thread: indivisible; the random schedule may switch threads just before one) ----
template <class T>
inline T atomicAdd(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicSub(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = old - v;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = v > old ? v : old;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = v;
  return old;
}
template <class T>
inline T atomicCAS(T* p, T cmp, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  if (old == cmp) *p = v;
  return old;
}
template <class T>
inline T atomicOr(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = old | v;
  return old;
}
template <class T>
inline T atomicAnd(T* p, T v) {
  cudaemu::maybe_yield();
  const T old = *p;
  *p = old & v;
  return old;
}
inline unsigned atomicInc(unsigned* p, unsigned v) {
  cudaemu::maybe_yield();
  const unsigned old = *p;
  *p = old >= v ? 0 : old + 1;
  return old;
}

// ---- host runtime API -------------------------------------------------------------------------------
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
inline cudaError_t cudaMallocAsync(T** p, size_t bytes, cudaStream_t s) {
  return cudaMallocAsync(reinterpret_cast<void**>(p), bytes, s);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p);
cudaError_t cudaFuncSetAttribute_impl(const void* func, cudaFuncAttribute attr, int value);
template <class F>
inline cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute_impl(reinterpret_cast<const void*>(func), attr, value);
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev);
cudaError_t cudaDeviceGetMemPool(cudaMemPool_t* pool, int dev);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props);
cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool);
cudaError_t cudaMallocFromPoolAsync(void** p, size_t bytes, cudaMemPool_t pool, cudaStream_t s);
template <class T>
inline cudaError_t cudaMallocFromPoolAsync(T** p, size_t bytes, cudaMemPool_t pool, cudaStream_t s) {
  return cudaMallocFromPoolAsync(reinterpret_cast<void**>(p), bytes, pool, s);
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status);

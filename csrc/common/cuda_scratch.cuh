// Stream-ordered scratch memory for the CUDA kernels' temporaries (knn, coreset, msgms, softmask), and
// the graph-capture test that decides whether a kernel's NaN/inf flag may be read back.
//
// Allocations come from a memory pool owned by edgead (one per device, created on first use) whose
// release threshold is 64 MiB, so freed scratch stays mapped across stream synchronisations and
// back-to-back calls do not map fresh memory each time. The device's default pool, and with it
// every other library's cudaMallocAsync in the process, is left exactly as the application set it.
// Where the device has no memory-pool support or the pool cannot be created, the device's current
// pool is used as is (cudaMallocAsync), nothing is changed.
//
// Scratch is RAII: the buffer is cudaFreeAsync'd on the same stream when the object goes out of scope,
// also when a CUDA check throws between allocation and the end of the call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>

#include "common/cuda_check.cuh"

namespace edgead {

constexpr int kScratchMaxDevices = 64;
constexpr std::uint64_t kScratchPoolKeep = 64ull << 20;  // bytes kept cached by edgead's pool

// edgead's pool for `dev`, or nullptr (use the device's current pool). Thread-safe, created once.
inline cudaMemPool_t scratch_pool(int dev) {
  static std::once_flag once[kScratchMaxDevices];
  static cudaMemPool_t pools[kScratchMaxDevices] = {};
  if (dev < 0 || dev >= kScratchMaxDevices) return nullptr;
  std::call_once(once[dev], [dev] {
    int supported = 0;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, dev) != cudaSuccess || !supported) {
      cudaGetLastError();
      return;
    }
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    cudaMemPool_t pool = nullptr;
    if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    std::uint64_t keep = kScratchPoolKeep;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);  // best effort
    pools[dev] = pool;
  });
  return pools[dev];
}

// True when `stream` is being captured into a CUDA graph (or its state cannot be queried): host reads
// and synchronisation are then not allowed, so the kernels' NaN/inf checks are skipped.
inline bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

// One stream-ordered buffer, freed (stream-ordered) when the object is destroyed.
class Scratch {
 public:
  explicit Scratch(cudaStream_t stream) : stream_(stream) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);  // no throw from a destructor; an error already surfaced
  }

  // n elements of T (at least one byte is allocated so that n == 0 still gives a valid pointer).
  template <class T>
  T* alloc(std::size_t n) {
    if (ptr_) throw std::logic_error("edgead::Scratch::alloc called twice on one buffer");
    const std::size_t bytes = sizeof(T) * (n ? n : 1);
    int dev = 0;
    EDGEAD_CUDA_CHECK(cudaGetDevice(&dev));
    cudaMemPool_t pool = scratch_pool(dev);
    if (pool)
      EDGEAD_CUDA_CHECK(cudaMallocFromPoolAsync(&ptr_, bytes, pool, stream_));
    else
      EDGEAD_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
    return static_cast<T*>(ptr_);
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

}  // namespace edgead

#include "common/device.h"

#include <stdexcept>

#ifdef EDGEAD_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace edgead {

#ifdef EDGEAD_WITH_CUDA

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not confused
    return 0;
  }
  return n;
}

std::string cuda_status() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(err);
  }
  return n > 0 ? "" : "no CUDA device found";
}

int cuda_pointer_device(const void* ptr, bool allow_null) {
  if (ptr == nullptr) {
    if (allow_null) return 0;
    return -2;
  }
  cudaPointerAttributes attr;
  cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return -2;
  }
  if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
  return -2;
}

void cuda_stream_synchronize(std::uintptr_t stream) {
  cudaError_t err = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err));
}

DeviceGuard::DeviceGuard(int device) {
  if (device < 0) return;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (current != device) {
    if (cudaSetDevice(device) != cudaSuccess) throw std::runtime_error("CUDA error: cannot select device " + std::to_string(device));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

#else

int cuda_device_count() { return 0; }
std::string cuda_status() { return "edgead._C was built without CUDA"; }
int cuda_pointer_device(const void*, bool) { return 0; }
void cuda_stream_synchronize(std::uintptr_t) {}
DeviceGuard::DeviceGuard(int) {}
DeviceGuard::~DeviceGuard() {}

#endif

}  // namespace edgead

// Host-side CUDA runtime helpers usable from plain C++ (compiled by the host compiler).
// Without CUDA they compile to stubs, so bindings need no #ifdefs for them.
#pragma once

#include <cstdint>
#include <string>

namespace edgead {

// Number of usable CUDA devices; 0 when built without CUDA, without a driver or without a GPU.
int cuda_device_count();
// Text of why no device is usable ("" when one is).
std::string cuda_status();
// Device ordinal owning `ptr`; -2 when `ptr` is host memory; 0 when built without CUDA or allow_null && !ptr.
int cuda_pointer_device(const void* ptr, bool allow_null);
// Blocks until all work queued on `stream` is done (0 = legacy default stream).
void cuda_stream_synchronize(std::uintptr_t stream);

// Makes `device` current for the lifetime of the guard (no-op for device < 0 or without CUDA).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace edgead

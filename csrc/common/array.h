// Array views over NumPy buffers and __cuda_array_interface__ objects, plus input checks.
// Every op's binding turns its Python arguments into ArrayView with to_view(), checks them with
// the require_* helpers (which raise ValueError/TypeError naming op, argument, expected, actual),
// then hands raw pointers to the CPU or CUDA implementation. No libtorch anywhere.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

namespace edgead {
namespace py = pybind11;

enum class DType : int { Float16, Float32, Float64, Int32, Int64, UInt8, UInt16, Bool, Int8, Unknown };
enum class DeviceType : int { CPU, CUDA };

const char* dtype_name(DType d);
int dtype_size(DType d);

struct ArrayView {
  void* data = nullptr;
  DType dtype = DType::Unknown;
  DeviceType device = DeviceType::CPU;
  int device_id = -1;             // CUDA ordinal, -1 on the CPU
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;   // in bytes
  bool readonly = false;
  std::shared_ptr<py::buffer_info> buffer;  // keeps a buffer-protocol export alive (needs the GIL to drop)

  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t numel() const;
  bool is_c_contiguous() const;
  bool is_cuda() const { return device == DeviceType::CUDA; }
  std::string shape_str() const;
  std::string device_str() const;
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// Builds a view from anything exposing __cuda_array_interface__ (torch CUDA tensors, CuPy, Numba)
// or the buffer protocol (NumPy). Raises TypeError naming `arg` for anything else.
ArrayView to_view(py::handle obj, const char* op, const char* arg);

[[noreturn]] void throw_value_error(const std::string& msg);
[[noreturn]] void throw_type_error(const std::string& msg);

void require_dtype(const ArrayView& a, const char* op, const char* arg, std::initializer_list<DType> allowed);
void require_ndim(const ArrayView& a, const char* op, const char* arg, int ndim);
void require_dim(const ArrayView& a, const char* op, const char* arg, int axis, int64_t expected);
void require_contiguous(const ArrayView& a, const char* op, const char* arg);
void require_writable(const ArrayView& a, const char* op, const char* arg);
void require_nonempty(const ArrayView& a, const char* op, const char* arg);
// All arrays on the same device (CPU, or the same CUDA ordinal).
void require_same_device(const char* op, std::initializer_list<std::pair<const char*, const ArrayView*>> arrays);
// Raises RuntimeError when `a` lives on a GPU but the extension was built without CUDA.
void require_cuda_built(const ArrayView& a, const char* op, const char* arg);

bool built_with_cuda();

}  // namespace edgead

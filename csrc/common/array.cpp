#include "common/array.h"

#include <sstream>

#include "common/device.h"

namespace edgead {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float16: return "float16";
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::UInt16: return "uint16";
    case DType::Bool: return "bool";
    case DType::Int8: return "int8";
    default: return "unsupported";
  }
}

int dtype_size(DType d) {
  switch (d) {
    case DType::Float16: return 2;
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::UInt8: return 1;
    case DType::UInt16: return 2;
    case DType::Bool: return 1;
    case DType::Int8: return 1;
    default: return 0;
  }
}

int64_t ArrayView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

bool ArrayView::is_c_contiguous() const {
  int64_t expected = dtype_size(dtype);
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string ArrayView::shape_str() const {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s << ", ";
    s << shape[i];
  }
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

std::string ArrayView::device_str() const {
  return device == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(device_id);
}

[[noreturn]] void throw_value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void throw_type_error(const std::string& msg) { throw py::type_error(msg); }

namespace {

// Typestr as in the array interface protocols ("<f4", "|u1", ...).
DType parse_typestr(const std::string& t) {
  if (t.size() < 3) return DType::Unknown;
  char kind = t[1];
  int size = std::atoi(t.c_str() + 2);
  if (t[0] == '>') return DType::Unknown;  // big-endian data is not supported
  if (kind == 'f' && size == 2) return DType::Float16;
  if (kind == 'f' && size == 4) return DType::Float32;
  if (kind == 'f' && size == 8) return DType::Float64;
  if (kind == 'i' && size == 4) return DType::Int32;
  if (kind == 'i' && size == 8) return DType::Int64;
  if (kind == 'i' && size == 1) return DType::Int8;
  if (kind == 'u' && size == 1) return DType::UInt8;
  if (kind == 'u' && size == 2) return DType::UInt16;
  if (kind == 'b' && size == 1) return DType::Bool;
  return DType::Unknown;
}

// Buffer-protocol format characters (struct module syntax).
DType parse_format(const std::string& f, py::ssize_t itemsize) {
  std::string c = f;
  if (!c.empty() && (c[0] == '<' || c[0] == '=' || c[0] == '@' || c[0] == '!' || c[0] == '>')) {
    if (c[0] == '>' || c[0] == '!') return DType::Unknown;
    c = c.substr(1);
  }
  if (c == "e") return DType::Float16;
  if (c == "f") return DType::Float32;
  if (c == "d") return DType::Float64;
  if (c == "?") return DType::Bool;
  if (c == "B") return DType::UInt8;
  if (c == "b") return DType::Int8;
  if (c == "H") return DType::UInt16;
  if ((c == "i" || c == "l" || c == "q") && itemsize == 4) return DType::Int32;
  if ((c == "i" || c == "l" || c == "q") && itemsize == 8) return DType::Int64;
  return DType::Unknown;
}

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

ArrayView from_cai(py::handle obj, const char* op, const char* arg) {
  py::dict cai = obj.attr("__cuda_array_interface__");
  ArrayView v;
  v.device = DeviceType::CUDA;
  std::string typestr = py::str(cai["typestr"]);
  v.dtype = parse_typestr(typestr);
  if (v.dtype == DType::Unknown)
    throw_type_error(std::string(op) + ": argument '" + arg + "' has unsupported dtype '" + typestr + "'");
  py::tuple shape = cai["shape"];
  for (auto s : shape) v.shape.push_back(s.cast<int64_t>());
  py::tuple data = cai["data"];
  v.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  v.readonly = data[1].cast<bool>();
  int64_t item = dtype_size(v.dtype);
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    py::tuple st = cai["strides"];
    for (auto s : st) v.strides.push_back(s.cast<int64_t>());
  } else {
    v.strides.assign(v.shape.size(), 0);
    int64_t acc = item;
    for (int i = static_cast<int>(v.shape.size()) - 1; i >= 0; --i) {
      v.strides[i] = acc;
      acc *= v.shape[i];
    }
  }
  if (cai.contains("mask") && !cai["mask"].is_none())
    throw_type_error(std::string(op) + ": argument '" + arg + "' is a masked CUDA array, which is not supported");
  v.device_id = cuda_pointer_device(v.data, v.numel() == 0);
  if (v.device_id == -2)
    throw_value_error(std::string(op) + ": argument '" + arg +
                      "' exposes __cuda_array_interface__ but its pointer is not CUDA device memory");
  return v;
}

// Every kernel reads its arrays through typed pointers: a buffer whose address is not a multiple of
// its element size (np.frombuffer(b, offset=1).view(np.float32)) would be a misaligned load (UB).
void require_aligned(const ArrayView& v, const char* op, const char* arg) {
  const int item = dtype_size(v.dtype);
  if (item <= 1 || v.numel() == 0) return;
  const auto addr = reinterpret_cast<uintptr_t>(v.data);
  bool ok = addr % static_cast<uintptr_t>(item) == 0;
  for (size_t i = 0; i < v.strides.size(); ++i) ok = ok && (v.shape[i] == 1 || v.strides[i] % item == 0);
  if (!ok)
    throw_value_error(std::string(op) + ": argument '" + arg + "' expected a buffer aligned to its dtype " +
                      dtype_name(v.dtype) + " (" + std::to_string(item) + " bytes), got address % " +
                      std::to_string(item) + " = " + std::to_string(addr % static_cast<uintptr_t>(item)) +
                      " or unaligned strides; pass a copy (e.g. np.array(x, copy=True))");
}

}  // namespace

ArrayView to_view(py::handle obj, const char* op, const char* arg) {
  if (obj.is_none()) throw_type_error(std::string(op) + ": argument '" + arg + "' expected an array, got None");
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    ArrayView v = from_cai(obj, op, arg);
    require_aligned(v, op, arg);
    return v;
  }
  if (!PyObject_CheckBuffer(obj.ptr()))
    throw_type_error(std::string(op) + ": argument '" + arg +
                     "' expected a NumPy array or a CUDA array (__cuda_array_interface__), got " + type_name(obj));
  auto info = std::make_shared<py::buffer_info>(py::reinterpret_borrow<py::buffer>(obj).request(false));
  ArrayView v;
  v.dtype = parse_format(info->format, info->itemsize);
  if (v.dtype == DType::Unknown)
    throw_type_error(std::string(op) + ": argument '" + arg + "' has unsupported dtype (buffer format '" +
                     info->format + "')");
  v.data = info->ptr;
  v.readonly = info->readonly;
  v.shape.assign(info->shape.begin(), info->shape.end());
  v.strides.assign(info->strides.begin(), info->strides.end());
  v.buffer = std::move(info);
  require_aligned(v, op, arg);
  return v;
}

void require_dtype(const ArrayView& a, const char* op, const char* arg, std::initializer_list<DType> allowed) {
  for (auto d : allowed)
    if (a.dtype == d) return;
  std::string exp;
  size_t i = 0;
  for (auto d : allowed) {
    if (i) exp += (i + 1 == allowed.size()) ? " or " : ", ";
    exp += dtype_name(d);
    ++i;
  }
  throw_type_error(std::string(op) + ": argument '" + arg + "' expected dtype " + exp + ", got " + dtype_name(a.dtype));
}

void require_ndim(const ArrayView& a, const char* op, const char* arg, int ndim) {
  if (a.ndim() != ndim)
    throw_value_error(std::string(op) + ": argument '" + arg + "' expected " + std::to_string(ndim) +
                      " dimensions, got " + std::to_string(a.ndim()) + " with shape " + a.shape_str());
}

void require_dim(const ArrayView& a, const char* op, const char* arg, int axis, int64_t expected) {
  if (a.shape[axis] != expected)
    throw_value_error(std::string(op) + ": argument '" + arg + "' expected size " + std::to_string(expected) +
                      " along axis " + std::to_string(axis) + ", got shape " + a.shape_str());
}

void require_contiguous(const ArrayView& a, const char* op, const char* arg) {
  if (!a.is_c_contiguous())
    throw_value_error(std::string(op) + ": argument '" + arg + "' expected a C-contiguous array, got strides that are not (shape " +
                      a.shape_str() + ")");
}

void require_writable(const ArrayView& a, const char* op, const char* arg) {
  if (a.readonly) throw_value_error(std::string(op) + ": argument '" + arg + "' expected a writable array, got a read-only one");
}

void require_nonempty(const ArrayView& a, const char* op, const char* arg) {
  if (a.numel() == 0) throw_value_error(std::string(op) + ": argument '" + arg + "' expected a non-empty array, got shape " + a.shape_str());
}

void require_same_device(const char* op, std::initializer_list<std::pair<const char*, const ArrayView*>> arrays) {
  const ArrayView* first = nullptr;
  const char* first_name = nullptr;
  for (auto& p : arrays) {
    if (!first) {
      first = p.second;
      first_name = p.first;
      continue;
    }
    if (p.second->device != first->device || p.second->device_id != first->device_id)
      throw_value_error(std::string(op) + ": arguments '" + first_name + "' and '" + p.first +
                        "' must be on the same device, got " + first->device_str() + " and " + p.second->device_str());
  }
}

bool built_with_cuda() {
#ifdef EDGEAD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void require_cuda_built(const ArrayView& a, const char* op, const char* arg) {
  if (a.is_cuda() && !built_with_cuda())
    throw std::runtime_error(std::string(op) + ": argument '" + arg +
                             "' is on a CUDA device but edgead._C was built without CUDA (rebuild with nvcc, EDGEAD_CUDA=ON)");
}

}  // namespace edgead

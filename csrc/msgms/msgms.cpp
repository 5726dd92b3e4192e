// Binding of the msgms op: validation, then CPU or CUDA dispatch (definition: msgms.h, docs/msgms.md).
#include "msgms/msgms.h"

#include <cmath>
#include <string>

#include <pybind11/pybind11.h>

#include "common/array.h"
#include "common/device.h"

namespace py = pybind11;

namespace edgead {
namespace {

void msgms_map_binding(py::handle image, py::handle reconstruction, py::handle out, double c, int scales,
                       int mean_filter, std::uintptr_t stream) {
  const char* op = "msgms_map";
  if (!(scales >= 1 && scales <= kMsgmsMaxScales))
    throw_value_error(std::string(op) + ": argument 'scales' expected an integer in [1, " +
                      std::to_string(kMsgmsMaxScales) + "], got " + std::to_string(scales));
  if (!(mean_filter >= 1 && mean_filter <= kMsgmsMaxFilter && mean_filter % 2 == 1))
    throw_value_error(std::string(op) + ": argument 'mean_filter' expected an odd integer in [1, " +
                      std::to_string(kMsgmsMaxFilter) + "], got " + std::to_string(mean_filter));
  if (!(std::isfinite(c) && c > 0.0))
    throw_value_error(std::string(op) + ": argument 'c' expected a finite value > 0, got " + std::to_string(c));

  ArrayView x = to_view(image, op, "image");
  ArrayView y = to_view(reconstruction, op, "reconstruction");
  ArrayView o = to_view(out, op, "out");
  require_dtype(x, op, "image", {DType::Float32, DType::Float16});
  require_ndim(x, op, "image", 4);
  require_dtype(y, op, "reconstruction", {DType::Float32, DType::Float16});
  if (y.dtype != x.dtype)
    throw_type_error(std::string(op) + ": argument 'reconstruction' expected dtype " + dtype_name(x.dtype) +
                     " (the dtype of 'image'), got " + dtype_name(y.dtype));
  require_ndim(y, op, "reconstruction", 4);
  if (y.shape != x.shape)
    throw_value_error(std::string(op) + ": argument 'reconstruction' expected shape " + x.shape_str() +
                      " (the shape of 'image'), got " + y.shape_str());
  require_nonempty(x, op, "image");
  const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t min_size = int64_t(1) << (scales - 1);
  if (H < min_size || W < min_size)
    throw_value_error(std::string(op) + ": argument 'image' expected height and width >= " + std::to_string(min_size) +
                      " (2^(scales-1) for scales=" + std::to_string(scales) + "), got shape " + x.shape_str());
  require_contiguous(x, op, "image");
  require_contiguous(y, op, "reconstruction");
  require_dtype(o, op, "out", {DType::Float32});
  require_ndim(o, op, "out", 3);
  require_dim(o, op, "out", 0, B);
  require_dim(o, op, "out", 1, H);
  require_dim(o, op, "out", 2, W);
  require_contiguous(o, op, "out");
  require_writable(o, op, "out");
  require_same_device(op, {{"image", &x}, {"reconstruction", &y}, {"out", &o}});
  require_cuda_built(x, op, "image");

  const bool half = x.dtype == DType::Float16;
  const float cf = static_cast<float>(c);
  if (x.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(x.device_id);
    py::gil_scoped_release release;
    msgms_cuda(x.data, y.data, half, B, C, H, W, scales, cf, mean_filter, o.ptr<float>(), stream);
#endif
    return;
  }
  int status;
  {
    py::gil_scoped_release release;
    status = msgms_cpu(x.data, y.data, half, B, C, H, W, scales, cf, mean_filter, o.ptr<float>());
  }
  if (status == 1)
    throw_value_error(std::string(op) + ": argument 'image' expected finite values, got NaN or Inf");
  if (status == 2)
    throw_value_error(std::string(op) + ": argument 'reconstruction' expected finite values, got NaN or Inf");
}

}  // namespace

void register_msgms(py::module_& m) {
  m.def("msgms_map", &msgms_map_binding, py::arg("image"), py::arg("reconstruction"), py::arg("out"),
        py::arg("c") = 0.0026, py::arg("scales") = 4, py::arg("mean_filter") = 21, py::arg("stream") = 0,
        "MSGMS anomaly map (B, H, W) float32 of image/reconstruction (B, C, H, W) float32|float16 into `out`; "
        "see docs/msgms.md. CPU inputs must be finite (ValueError otherwise); CUDA inputs are not scanned.");
}

}  // namespace edgead

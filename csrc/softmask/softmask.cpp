// Binding of the softmask op: validation, then CPU or CUDA dispatch (definition: softmask.h).
#include "softmask/softmask.h"

#include <string>

#include <pybind11/pybind11.h>

#include "common/array.h"
#include "common/device.h"

namespace py = pybind11;

namespace edgead {
namespace {

void softmask_apply_binding(py::handle pred_obj, py::handle features_obj, py::handle out_obj, std::uintptr_t stream) {
  const char* op = "softmask_apply";
  ArrayView p = to_view(pred_obj, op, "pred");
  ArrayView f = to_view(features_obj, op, "features");
  ArrayView o = to_view(out_obj, op, "out");
  require_dtype(p, op, "pred", {DType::Float32, DType::Float16});
  require_ndim(p, op, "pred", 3);
  require_nonempty(p, op, "pred");
  require_contiguous(p, op, "pred");
  require_dtype(f, op, "features", {DType::Float32, DType::Float16});
  require_ndim(f, op, "features", 4);
  require_dim(f, op, "features", 0, p.shape[0]);
  require_nonempty(f, op, "features");
  require_contiguous(f, op, "features");
  if (o.dtype != f.dtype)
    throw_type_error(std::string(op) + ": argument 'out' expected dtype " + dtype_name(f.dtype) +
                     " (the dtype of 'features'), got " + dtype_name(o.dtype));
  if (o.shape != f.shape)
    throw_value_error(std::string(op) + ": argument 'out' expected shape " + f.shape_str() +
                      " (the shape of 'features'), got " + o.shape_str());
  require_contiguous(o, op, "out");
  require_writable(o, op, "out");
  require_same_device(op, {{"pred", &p}, {"features", &f}, {"out", &o}});
  require_cuda_built(p, op, "pred");

  const int64_t B = p.shape[0], h = p.shape[1], w = p.shape[2];
  const int64_t C = f.shape[1], Hs = f.shape[2], Ws = f.shape[3];
  const bool ph = p.dtype == DType::Float16, fh = f.dtype == DType::Float16;
  int64_t bad = -1;
  if (p.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(p.device_id);
    py::gil_scoped_release release;
    bad = softmask_cuda(p.data, ph, f.data, fh, o.data, B, h, w, C, Hs, Ws, stream);
#endif
  } else {
    py::gil_scoped_release release;
    bad = softmask_cpu(p.data, ph, f.data, fh, o.data, B, h, w, C, Hs, Ws);
  }
  if (bad >= 0)
    throw_value_error(std::string(op) + ": argument 'pred' expected finite values, got NaN or Inf in image " +
                      std::to_string(bad));
}

}  // namespace

void register_softmask(py::module_& m) {
  m.def("softmask_apply", &softmask_apply_binding, py::arg("pred"), py::arg("features"), py::arg("out"),
        py::arg("stream") = 0,
        "FADeR soft mask: out = features * nearest(1 - minmax(pred)) per image; pred (B, h, w), features/out "
        "(B, C, Hs, Ws), float32|float16. out may be features (in place).");
}

}  // namespace edgead

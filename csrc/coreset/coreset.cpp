// coreset binding: validation + CPU/CUDA dispatch. Python API: edgead.ops.coreset.
#include <pybind11/pybind11.h>

#include <string>

#include "common/array.h"
#include "common/device.h"
#include "coreset/coreset.h"

namespace py = pybind11;

namespace edgead {
namespace {

constexpr const char* kOp = "coreset";

void coreset_binding(py::handle features_obj, int64_t n, int64_t start, py::handle idx_obj, py::handle dist_obj,
                     std::uintptr_t stream) {
  ArrayView x = to_view(features_obj, kOp, "features");
  require_dtype(x, kOp, "features", {DType::Float32, DType::Float16});
  require_ndim(x, kOp, "features", 2);
  require_nonempty(x, kOp, "features");
  require_contiguous(x, kOp, "features");
  require_cuda_built(x, kOp, "features");
  const int64_t N = x.shape[0], D = x.shape[1];
  if (n < 1) throw_value_error(std::string(kOp) + ": argument 'n' expected n >= 1, got " + std::to_string(n));
  if (n > N)
    throw_value_error(std::string(kOp) + ": argument 'n' expected n <= number of points N = " + std::to_string(N) +
                      ", got n = " + std::to_string(n));
  if (start < 0 || start >= N)
    throw_value_error(std::string(kOp) + ": argument 'start' expected 0 <= start < N = " + std::to_string(N) +
                      ", got " + std::to_string(start));
  ArrayView idx = to_view(idx_obj, kOp, "out_idx");
  require_dtype(idx, kOp, "out_idx", {DType::Int64});
  require_ndim(idx, kOp, "out_idx", 1);
  require_dim(idx, kOp, "out_idx", 0, n);
  require_contiguous(idx, kOp, "out_idx");
  require_writable(idx, kOp, "out_idx");
  ArrayView dist;
  const bool has_dist = !dist_obj.is_none();
  if (has_dist) {
    dist = to_view(dist_obj, kOp, "out_dist");
    require_dtype(dist, kOp, "out_dist", {DType::Float32});
    require_ndim(dist, kOp, "out_dist", 1);
    require_dim(dist, kOp, "out_dist", 0, n);
    require_contiguous(dist, kOp, "out_dist");
    require_writable(dist, kOp, "out_dist");
    require_same_device(kOp, {{"features", &x}, {"out_idx", &idx}, {"out_dist", &dist}});
  } else {
    require_same_device(kOp, {{"features", &x}, {"out_idx", &idx}});
  }
  const bool fp16 = x.dtype == DType::Float16;
  float* dp = has_dist ? dist.ptr<float>() : nullptr;
  int status = CORESET_OK;
  if (x.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(x.device_id);
    py::gil_scoped_release nogil;
    status = coreset_cuda(x.data, fp16, N, D, n, start, idx.ptr<int64_t>(), dp, stream);
#endif
  } else {
    py::gil_scoped_release nogil;
    status = coreset_cpu(x.data, fp16, N, D, n, start, idx.ptr<int64_t>(), dp);
  }
  if (status == CORESET_NONFINITE)
    throw_value_error(std::string(kOp) + ": argument 'features' expected finite values, got NaN or inf");
}

}  // namespace

void register_coreset(py::module_& m) {
  m.def("coreset", &coreset_binding, py::arg("features"), py::arg("n"), py::arg("start"), py::arg("out_idx"),
        py::arg("out_dist"), py::arg("stream") = 0,
        "Greedy k-center selection of n rows of features (N,D); writes out_idx int64 (n,) in selection order "
        "and optionally out_dist float32 (n,) (distance to the previously selected set, [0] = inf).");
}

}  // namespace edgead

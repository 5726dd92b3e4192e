// Binding of the pro op: validation, CPU/CUDA dispatch. The Python API is edgead.ops.pro_curve.
#include "pro/pro.h"

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/array.h"
#include "common/device.h"

namespace py = pybind11;

namespace edgead {
namespace {

constexpr const char* kOp = "pro_curve";

std::string where(int64_t flat, int64_t h, int64_t w) {
  const int64_t hw = h * w;
  return "(" + std::to_string(flat / hw) + ", " + std::to_string((flat % hw) / w) + ", " + std::to_string(flat % w) + ")";
}

std::string fmt_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return std::to_string(v);
}

// Returns (n_points, aupro, n_regions, n_normal).
py::tuple pro_curve(py::handle maps_obj, py::handle masks_obj, double fpr_limit, py::handle fpr_obj,
                    py::handle pro_obj, py::handle thr_obj, std::uintptr_t stream) {
  ArrayView maps = to_view(maps_obj, kOp, "anomaly_maps");
  ArrayView masks = to_view(masks_obj, kOp, "masks");
  require_dtype(maps, kOp, "anomaly_maps", {DType::Float32, DType::Float64});
  require_dtype(masks, kOp, "masks", {DType::UInt8, DType::Bool});
  require_ndim(maps, kOp, "anomaly_maps", 3);
  require_ndim(masks, kOp, "masks", 3);
  require_nonempty(maps, kOp, "anomaly_maps");
  if (maps.shape != masks.shape)
    throw_value_error(std::string(kOp) + ": arguments 'anomaly_maps' and 'masks' must have the same shape, got " +
                      maps.shape_str() + " and " + masks.shape_str());
  require_contiguous(maps, kOp, "anomaly_maps");
  require_contiguous(masks, kOp, "masks");
  require_same_device(kOp, {{"anomaly_maps", &maps}, {"masks", &masks}});
  require_cuda_built(maps, kOp, "anomaly_maps");
  if (!(fpr_limit > 0.0 && fpr_limit <= 1.0))
    throw_value_error(std::string(kOp) + ": argument 'fpr_limit' expected a value in (0, 1], got " + fmt_double(fpr_limit));
  const int64_t n = maps.shape[0], h = maps.shape[1], w = maps.shape[2];
  if (h * w >= (int64_t(1) << 31))
    throw_value_error(std::string(kOp) + ": argument 'anomaly_maps' expected fewer than 2^31 pixels per image, got shape " +
                      maps.shape_str());

  const bool want_curve = !fpr_obj.is_none() || !pro_obj.is_none() || !thr_obj.is_none();
  ArrayView fpr, pro, thr;
  int64_t capacity = 0;
  if (want_curve) {
    const char* names[3] = {"fpr_out", "pro_out", "thr_out"};
    py::handle objs[3] = {fpr_obj, pro_obj, thr_obj};
    ArrayView* views[3] = {&fpr, &pro, &thr};
    for (int k = 0; k < 3; ++k) {
      *views[k] = to_view(objs[k], kOp, names[k]);
      ArrayView& v = *views[k];
      if (v.is_cuda())
        throw_value_error(std::string(kOp) + ": argument '" + names[k] + "' expected a host (NumPy) array, got " + v.device_str());
      require_dtype(v, kOp, names[k], {DType::Float64});
      require_ndim(v, kOp, names[k], 1);
      require_contiguous(v, kOp, names[k]);
      require_writable(v, kOp, names[k]);
    }
    capacity = fpr.shape[0];
    require_dim(pro, kOp, "pro_out", 0, capacity);
    require_dim(thr, kOp, "thr_out", 0, capacity);
  }

  pro::Result r;
  const bool f64 = maps.dtype == DType::Float64;
  const uint8_t* mptr = static_cast<const uint8_t*>(masks.data);
  double* fp = want_curve ? fpr.ptr<double>() : nullptr;
  double* pp = want_curve ? pro.ptr<double>() : nullptr;
  double* tp = want_curve ? thr.ptr<double>() : nullptr;
  if (maps.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(maps.device_id);
    py::gil_scoped_release nogil;
    r = pro::pro_curve_cuda(maps.data, f64, mptr, n, h, w, fpr_limit, fp, pp, tp, capacity, stream);
#endif
  } else {
    py::gil_scoped_release nogil;
    r = pro::pro_curve_cpu(maps.data, f64, mptr, n, h, w, fpr_limit, fp, pp, tp, capacity);
  }

  switch (r.status) {
    case pro::kOk:
      break;
    case pro::kNonFiniteScore:
      throw_value_error(std::string(kOp) + ": argument 'anomaly_maps' expected finite scores, got " + fmt_double(r.bad_value) +
                        " at index " + where(r.bad_index, h, w));
    case pro::kBadMask:
      throw_value_error(std::string(kOp) + ": argument 'masks' expected binary values (bool, or uint8 in {0, 1}), got " +
                        std::to_string(static_cast<int>(r.bad_value)) + " at index " + where(r.bad_index, h, w) +
                        " (for 0/255 masks pass masks > 0)");
    case pro::kNoRegions:
      throw_value_error(std::string(kOp) + ": AUPRO is undefined: argument 'masks' has no defect pixels (no ground-truth "
                        "regions in any of the " + std::to_string(n) + " images)");
    case pro::kNoNormal:
      throw_value_error(std::string(kOp) + ": AUPRO is undefined: argument 'masks' has no defect-free pixels (the FPR "
                        "needs at least one normal pixel)");
    case pro::kCapacity:
      throw_value_error(std::string(kOp) + ": curve buffers hold " + std::to_string(capacity) + " points, " +
                        std::to_string(r.bad_index) + " needed");
    case pro::kTooLarge:
      throw_value_error(std::string(kOp) + ": argument 'anomaly_maps' expected fewer than 2^31 - 1 pixels on the GPU, got shape " +
                        maps.shape_str());
    default:
      throw std::runtime_error(std::string(kOp) + ": internal error, status " + std::to_string(r.status));
  }
  return py::make_tuple(r.n_points, r.aupro, r.n_regions, r.n_normal);
}

}  // namespace

void register_pro(py::module_& m) {
  m.def("pro_curve", &pro_curve, py::arg("anomaly_maps"), py::arg("masks"), py::arg("fpr_limit"),
        py::arg("fpr_out") = py::none(), py::arg("pro_out") = py::none(), py::arg("thr_out") = py::none(),
        py::arg("stream") = 0,
        "PRO curve and AUPRO (MVTec AD, 8-connected regions, exact thresholds, ties merged). "
        "anomaly_maps (N,H,W) float32/float64, masks (N,H,W) bool/uint8 in {0,1}, on the same device. "
        "Curve written to host float64 buffers (all None: area only). Returns (n_points, aupro, n_regions, n_normal).");
}

}  // namespace edgead

// knn binding: validation + CPU/CUDA dispatch. Python API: edgead.ops.knn.
#include <pybind11/pybind11.h>

#include <string>

#include "common/array.h"
#include "common/device.h"
#include "knn/knn.h"
#ifdef EDGEAD_WITH_CUDA
#include "common/cublas_gemm.h"
#endif

namespace py = pybind11;

namespace edgead {
namespace {

constexpr const char* kOp = "knn";

void check_matrix(const ArrayView& a, const char* arg) {
  require_dtype(a, kOp, arg, {DType::Float32, DType::Float16});
  require_ndim(a, kOp, arg, 2);
  require_nonempty(a, kOp, arg);
  require_contiguous(a, kOp, arg);
  require_cuda_built(a, kOp, arg);
}

void knn_binding(py::handle queries_obj, py::handle bank_obj, py::handle norms_obj, int k, py::handle dist_obj,
                 py::handle idx_obj, std::uintptr_t stream) {
  ArrayView q = to_view(queries_obj, kOp, "queries");
  ArrayView b = to_view(bank_obj, kOp, "bank");
  check_matrix(q, "queries");
  check_matrix(b, "bank");
  if (q.dtype != b.dtype)
    throw_type_error(std::string(kOp) + ": arguments 'queries' and 'bank' must have the same dtype, got " +
                     dtype_name(q.dtype) + " and " + dtype_name(b.dtype));
  if (q.shape[1] != b.shape[1])
    throw_value_error(std::string(kOp) + ": arguments 'queries' and 'bank' must have the same feature size D, got " +
                      q.shape_str() + " and " + b.shape_str());
  const int64_t Q = q.shape[0], M = b.shape[0], D = q.shape[1];
  if (k < 1) throw_value_error(std::string(kOp) + ": argument 'k' expected k >= 1, got " + std::to_string(k));
  if (k > M)
    throw_value_error(std::string(kOp) + ": argument 'k' expected k <= bank rows M = " + std::to_string(M) +
                      " (bank smaller than k), got k = " + std::to_string(k));
  ArrayView dist = to_view(dist_obj, kOp, "out_dist");
  ArrayView idx = to_view(idx_obj, kOp, "out_idx");
  require_dtype(dist, kOp, "out_dist", {DType::Float32});
  require_dtype(idx, kOp, "out_idx", {DType::Int64});
  for (auto* a : {&dist, &idx}) {
    const char* name = a == &dist ? "out_dist" : "out_idx";
    require_ndim(*a, kOp, name, 2);
    require_dim(*a, kOp, name, 0, Q);
    require_dim(*a, kOp, name, 1, k);
    require_contiguous(*a, kOp, name);
    require_writable(*a, kOp, name);
  }
  ArrayView norms;
  const bool has_norms = !norms_obj.is_none();
  if (has_norms) {
    norms = to_view(norms_obj, kOp, "bank_sq_norms");
    require_dtype(norms, kOp, "bank_sq_norms", {DType::Float32});
    require_ndim(norms, kOp, "bank_sq_norms", 1);
    require_dim(norms, kOp, "bank_sq_norms", 0, M);
    require_contiguous(norms, kOp, "bank_sq_norms");
    require_same_device(kOp, {{"queries", &q}, {"bank", &b}, {"bank_sq_norms", &norms}, {"out_dist", &dist}, {"out_idx", &idx}});
  } else {
    require_same_device(kOp, {{"queries", &q}, {"bank", &b}, {"out_dist", &dist}, {"out_idx", &idx}});
  }
  const bool fp16 = q.dtype == DType::Float16;
  const float* bn = has_norms ? norms.ptr<const float>() : nullptr;
  int status = KNN_OK;
  if (q.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    if (k > kKnnCudaMaxK)
      throw_value_error(std::string(kOp) + ": argument 'k' expected k <= " + std::to_string(kKnnCudaMaxK) +
                        " on CUDA, got k = " + std::to_string(k));
    DeviceGuard guard(q.device_id);
    py::gil_scoped_release nogil;
    status = knn_cuda(q.data, b.data, fp16, bn, Q, M, D, k, dist.ptr<float>(), idx.ptr<int64_t>(), stream);
#endif
  } else {
    py::gil_scoped_release nogil;
    status = knn_cpu(q.data, b.data, fp16, bn, Q, M, D, k, dist.ptr<float>(), idx.ptr<int64_t>());
  }
  if (status == KNN_NONFINITE_QUERIES)
    throw_value_error(std::string(kOp) + ": argument 'queries' expected finite values, got NaN or inf");
  if (status == KNN_NONFINITE_BANK)
    throw_value_error(std::string(kOp) + ": argument 'bank' expected finite values, got NaN or inf");
}

void sq_norms_binding(py::handle x_obj, py::handle out_obj, std::uintptr_t stream) {
  ArrayView x = to_view(x_obj, kOp, "bank");
  check_matrix(x, "bank");
  ArrayView out = to_view(out_obj, kOp, "out");
  require_dtype(out, kOp, "out", {DType::Float32});
  require_ndim(out, kOp, "out", 1);
  require_dim(out, kOp, "out", 0, x.shape[0]);
  require_contiguous(out, kOp, "out");
  require_writable(out, kOp, "out");
  require_same_device(kOp, {{"bank", &x}, {"out", &out}});
  const bool fp16 = x.dtype == DType::Float16;
  if (x.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(x.device_id);
    py::gil_scoped_release nogil;
    sq_norms_cuda(x.data, fp16, x.shape[0], x.shape[1], out.ptr<float>(), stream);
#endif
    return;
  }
  py::gil_scoped_release nogil;
  sq_norms_cpu(x.data, fp16, x.shape[0], x.shape[1], out.ptr<float>());
}

}  // namespace

void register_knn(py::module_& m) {
  m.def("knn", &knn_binding, py::arg("queries"), py::arg("bank"), py::arg("bank_sq_norms"), py::arg("k"),
        py::arg("out_dist"), py::arg("out_idx"), py::arg("stream") = 0,
        "k nearest bank rows per query (L2). Writes out_dist float32 (Q,k) and out_idx int64 (Q,k), ascending.");
  m.def(
      "cublas_status",
      []() -> std::string {
#ifdef EDGEAD_WITH_CUDA
        return cublas_status();
#else
        return "not built with CUDA";
#endif
      },
      "What the CUDA knn GEMM path loaded (a cuBLAS soname or path), or why it uses the fused kernel.");
  m.def(
      "cublas_release",
      []() {
#ifdef EDGEAD_WITH_CUDA
        cublas_release();
#endif
      },
      "Destroy the knn GEMM path's cuBLAS handles (recreated on next use); for leak checkers.");
  m.def("knn_sq_norms", &sq_norms_binding, py::arg("bank"), py::arg("out"), py::arg("stream") = 0,
        "Squared L2 norm of every row of bank (M,D) into out float32 (M,).");
}

}  // namespace edgead

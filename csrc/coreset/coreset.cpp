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

ArrayView features_view(py::handle features_obj) {
  ArrayView x = to_view(features_obj, kOp, "features");
  require_dtype(x, kOp, "features", {DType::Float32, DType::Float16});
  require_ndim(x, kOp, "features", 2);
  require_nonempty(x, kOp, "features");
  require_contiguous(x, kOp, "features");
  require_cuda_built(x, kOp, "features");
  return x;
}

void coreset_binding(py::handle features_obj, int64_t n, int64_t start, py::handle idx_obj, py::handle dist_obj,
                     std::uintptr_t stream) {
  ArrayView x = features_view(features_obj);
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

// Validates the resumable state arrays: min_d2 float32 (N,), assign int32 (N,) (CPU; None allowed on
// CUDA), out_idx int64 (n,), out_dist float32 (n,) or None; all writable, contiguous, on x's device.
struct StateViews {
  ArrayView mind, asg, idx, dist;
  bool has_asg = false, has_dist = false;
};

StateViews state_views(const ArrayView& x, py::handle mind_obj, py::handle asg_obj, py::handle idx_obj,
                       py::handle dist_obj) {
  const int64_t N = x.shape[0];
  StateViews v;
  auto vec = [&](ArrayView& a, py::handle obj, const char* name, DType dt, int64_t len) {
    a = to_view(obj, kOp, name);
    require_dtype(a, kOp, name, {dt});
    require_ndim(a, kOp, name, 1);
    if (len >= 0) require_dim(a, kOp, name, 0, len);
    require_contiguous(a, kOp, name);
    require_writable(a, kOp, name);
  };
  vec(v.mind, mind_obj, "min_d2", DType::Float32, N);
  vec(v.idx, idx_obj, "out_idx", DType::Int64, -1);
  require_nonempty(v.idx, kOp, "out_idx");
  const int64_t n = v.idx.shape[0];
  v.has_asg = !asg_obj.is_none();
  if (v.has_asg) vec(v.asg, asg_obj, "assign", DType::Int32, N);
  if (!x.is_cuda() && !v.has_asg)
    throw_value_error(std::string(kOp) + ": argument 'assign' expected an int32 (N,) array for CPU features, got None");
  v.has_dist = !dist_obj.is_none();
  if (v.has_dist) vec(v.dist, dist_obj, "out_dist", DType::Float32, n);
  require_same_device(kOp, {{"features", &x}, {"min_d2", &v.mind}, {"out_idx", &v.idx}});
  if (v.has_asg) require_same_device(kOp, {{"features", &x}, {"assign", &v.asg}});
  if (v.has_dist) require_same_device(kOp, {{"features", &x}, {"out_dist", &v.dist}});
  return v;
}


// Checks features for NaN/inf and writes the state after the first selection (idx[0] = start).
void coreset_init_binding(py::handle features_obj, int64_t start, py::handle mind_obj, py::handle asg_obj,
                          py::handle idx_obj, py::handle dist_obj, std::uintptr_t stream) {
  ArrayView x = features_view(features_obj);
  const int64_t N = x.shape[0], D = x.shape[1];
  if (start < 0 || start >= N)
    throw_value_error(std::string(kOp) + ": argument 'start' expected 0 <= start < N = " + std::to_string(N) +
                      ", got " + std::to_string(start));
  StateViews v = state_views(x, mind_obj, asg_obj, idx_obj, dist_obj);
  const bool fp16 = x.dtype == DType::Float16;
  float* dp = v.has_dist ? v.dist.ptr<float>() : nullptr;
  int status = CORESET_OK;
  if (x.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(x.device_id);
    py::gil_scoped_release nogil;
    status = coreset_cuda_check(x.data, fp16, N, D, stream);
    if (status == CORESET_OK) coreset_cuda_init(N, start, v.mind.ptr<float>(), v.idx.ptr<int64_t>(), dp, stream);
#endif
  } else {
    py::gil_scoped_release nogil;
    status = coreset_cpu_check(x.data, fp16, N, D);
    if (status == CORESET_OK) coreset_cpu_init(N, start, v.mind.ptr<float>(), v.asg.ptr<int32_t>(), v.idx.ptr<int64_t>(), dp);
  }
  if (status == CORESET_NONFINITE)
    throw_value_error(std::string(kOp) + ": argument 'features' expected finite values, got NaN or inf");
}

// Selects idx[s0..s1-1] from the state at s0 (1 <= s0 <= s1 <= n); the state is then at s1. Features
// are not re-scanned (coreset_init did) and must not change between calls.
void coreset_step_binding(py::handle features_obj, int64_t s0, int64_t s1, py::handle mind_obj, py::handle asg_obj,
                          py::handle idx_obj, py::handle dist_obj, std::uintptr_t stream) {
  ArrayView x = features_view(features_obj);
  const int64_t N = x.shape[0], D = x.shape[1];
  StateViews v = state_views(x, mind_obj, asg_obj, idx_obj, dist_obj);
  const int64_t n = v.idx.shape[0];
  if (n > N)
    throw_value_error(std::string(kOp) + ": argument 'out_idx' expected at most N = " + std::to_string(N) +
                      " entries, got " + std::to_string(n));
  if (s0 < 1 || s1 < s0 || s1 > n)
    throw_value_error(std::string(kOp) + ": arguments 's0', 's1' expected 1 <= s0 <= s1 <= n = " + std::to_string(n) +
                      ", got s0 = " + std::to_string(s0) + ", s1 = " + std::to_string(s1));
  const bool fp16 = x.dtype == DType::Float16;
  float* dp = v.has_dist ? v.dist.ptr<float>() : nullptr;
  if (x.is_cuda()) {
#ifdef EDGEAD_WITH_CUDA
    DeviceGuard guard(x.device_id);
    py::gil_scoped_release nogil;
    coreset_cuda_steps(x.data, fp16, N, D, s0, s1, v.mind.ptr<float>(), v.idx.ptr<int64_t>(), dp, stream);
#endif
    return;
  }
  // CPU: the state is host memory, so it is cheap to verify that it indexes in range (never a crash).
  const int64_t* idx = v.idx.ptr<int64_t>();
  for (int64_t a = 0; a < s0; ++a)
    if (idx[a] < 0 || idx[a] >= N)
      throw_value_error(std::string(kOp) + ": argument 'out_idx' expected selected indices in [0, N) before s0, got " +
                        std::to_string(idx[a]) + " at " + std::to_string(a));
  const int32_t* asg = v.asg.ptr<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    if (asg[i] < -1 || asg[i] > s0 - 2)
      throw_value_error(std::string(kOp) + ": argument 'assign' expected values in [-1, s0 - 2], got " +
                        std::to_string(asg[i]) + " at " + std::to_string(i));
  py::gil_scoped_release nogil;
  coreset_cpu_steps(x.data, fp16, N, D, s0, s1, v.mind.ptr<float>(), v.asg.ptr<int32_t>(), v.idx.ptr<int64_t>(), dp);
}

}  // namespace

void register_coreset(py::module_& m) {
  m.def("coreset", &coreset_binding, py::arg("features"), py::arg("n"), py::arg("start"), py::arg("out_idx"),
        py::arg("out_dist"), py::arg("stream") = 0,
        "Greedy k-center selection of n rows of features (N,D); writes out_idx int64 (n,) in selection order "
        "and optionally out_dist float32 (n,) (distance to the previously selected set, [0] = inf).");
  m.def("coreset_init", &coreset_init_binding, py::arg("features"), py::arg("start"), py::arg("min_d2"),
        py::arg("assign"), py::arg("out_idx"), py::arg("out_dist"), py::arg("stream") = 0,
        "Resumable coreset: checks features (NaN/inf -> ValueError) and writes the state after idx[0] = start "
        "(min_d2 float32 (N,), assign int32 (N,) or None on CUDA, out_idx int64 (n,), out_dist float32 (n,) or None).");
  m.def("coreset_step", &coreset_step_binding, py::arg("features"), py::arg("s0"), py::arg("s1"), py::arg("min_d2"),
        py::arg("assign"), py::arg("out_idx"), py::arg("out_dist"), py::arg("stream") = 0,
        "Resumable coreset: selects out_idx[s0:s1] from the state left by coreset_init / the previous step.");
}

}  // namespace edgead

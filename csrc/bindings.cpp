// The one PYBIND11_MODULE: registers every op. Each op lives in csrc/<op>/ with its own
// register_<op>() (validation + dispatch in <op>.cpp, kernels in <op>_cpu.cpp / <op>_cuda.cu).
#include <pybind11/pybind11.h>

#include "common/array.h"
#include "common/device.h"
#include "common/parallel.h"

namespace py = pybind11;

namespace edgead {
void register_pro(py::module_& m);
void register_knn(py::module_& m);
void register_coreset(py::module_& m);
void register_msgms(py::module_& m);
void register_softmask(py::module_& m);
#ifdef EDGEAD_WITH_CUDA
int cuda_runtime_version();
#endif
}  // namespace edgead

#ifndef EDGEAD_VERSION
#define EDGEAD_VERSION "unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgead native kernels (CPU and CUDA); see edgead.ops for the Python API";

  m.def("build_info", []() {
    py::dict d;
    d["version"] = EDGEAD_VERSION;
    d["cuda"] = edgead::built_with_cuda();
#ifdef EDGEAD_WITH_CUDA
    d["cuda_version"] = EDGEAD_CUDA_VERSION;
    d["cuda_architectures"] = EDGEAD_CUDA_ARCHS;
    d["cudart"] = "static";
    d["cuda_runtime_version"] = edgead::cuda_runtime_version();
#else
    d["cuda_version"] = py::none();
    d["cuda_architectures"] = py::none();
    d["cudart"] = py::none();
    d["cuda_runtime_version"] = py::none();
#endif
#ifdef EDGEAD_WITH_OPENMP
    d["openmp"] = true;
#else
    d["openmp"] = false;
#endif
    d["cpu_threads"] = edgead::cpu_threads();
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#else
    d["compiler"] = "unknown";
#endif
    py::list ops;
    for (auto name : {"pro", "knn", "coreset", "msgms", "softmask"}) ops.append(name);
    d["ops"] = ops;
    return d;
  }, "What this build of edgead._C contains: version, CUDA version and architectures, OpenMP, ops.");

  m.def("cuda_device_count", &edgead::cuda_device_count,
        "Number of CUDA devices usable now (0 without CUDA build, driver or GPU).");
  m.def("cuda_status", &edgead::cuda_status, "Why no CUDA device is usable ('' when one is).");
  m.def("cuda_stream_synchronize", &edgead::cuda_stream_synchronize, py::arg("stream") = 0);

  edgead::register_pro(m);
  edgead::register_knn(m);
  edgead::register_coreset(m);
  edgead::register_msgms(m);
  edgead::register_softmask(m);
}

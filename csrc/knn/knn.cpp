// Placeholder: replaced by the knn op's binding (validation + CPU/CUDA dispatch).
#include <pybind11/pybind11.h>

namespace edgead {
void register_knn(pybind11::module_& m) {}
}  // namespace edgead

// Placeholder: replaced by the coreset op's binding (validation + CPU/CUDA dispatch).
#include <pybind11/pybind11.h>

namespace edgead {
void register_coreset(pybind11::module_& m) {}
}  // namespace edgead

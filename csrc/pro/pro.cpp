// Placeholder: replaced by the pro op's binding (validation + CPU/CUDA dispatch).
#include <pybind11/pybind11.h>

namespace edgead {
void register_pro(pybind11::module_& m) {}
}  // namespace edgead

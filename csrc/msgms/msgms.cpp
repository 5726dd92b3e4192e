// Placeholder: replaced by the msgms op's binding (validation + CPU/CUDA dispatch).
#include <pybind11/pybind11.h>

namespace edgead {
void register_msgms(pybind11::module_& m) {}
}  // namespace edgead

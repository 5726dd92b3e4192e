// Placeholder: replaced by the softmask op's binding (validation + CPU/CUDA dispatch).
#include <pybind11/pybind11.h>

namespace edgead {
void register_softmask(pybind11::module_& m) {}
}  // namespace edgead

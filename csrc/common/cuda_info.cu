// Compiled by nvcc: the CUDA runtime version linked into edgead._C (reported by build_info()).
#include <cuda_runtime.h>

namespace edgead {
int cuda_runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return 0;
  return v;
}
}  // namespace edgead

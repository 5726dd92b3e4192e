// CPU parallel loop: OpenMP when the compiler has it, else serial. Call with the GIL released.
#pragma once

#include <cstdint>

#ifdef EDGEAD_WITH_OPENMP
#include <omp.h>
#endif

namespace edgead {

inline int cpu_threads() {
#ifdef EDGEAD_WITH_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// f(begin, end) over [0, n) in contiguous chunks of at least `grain` items.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
#ifdef EDGEAD_WITH_OPENMP
  int64_t threads = omp_get_max_threads();
  int64_t chunks = (n + grain - 1) / (grain > 0 ? grain : 1);
  if (chunks > threads) chunks = threads;
  if (chunks <= 1) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel for num_threads(chunks) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) f(b, e);
  }
#else
  f(int64_t(0), n);
#endif
}

}  // namespace edgead

// Stand-in for libcublas under the CUDA emulator: the three C entry points edgead loads
// (csrc/common/cublas_gemm.cu), implemented from cuBLAS's documented semantics (column-major storage,
// op(A) = A or A^T, C = alpha op(A) op(B) + beta C) as plain loops over the emulator's device memory
// (host memory). Strict about what edgead may pass: unknown enums, leading dimensions smaller than the
// documented minimum, a null or uncreated handle -> CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED, like cuBLAS.
// Built as a shared library; the suite points $EDGEAD_CUBLAS at it, so edgead's dlopen path runs too.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>

namespace {
constexpr int kOk = 0, kNotInitialized = 1, kInvalidValue = 7, kNotSupported = 15;
constexpr int kOpN = 0, kOpT = 1, kR32F = 0, kR16F = 2, kCompute32F = 68, kGemmDefault = -1;
std::set<void*> g_handles;
int g_calls = 0;

float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  float v;
  if (exp == 0) v = std::ldexp((float)man, -24);                    // zero / subnormal
  else if (exp == 31) v = man ? NAN : INFINITY;                      // inf / NaN
  else v = std::ldexp((float)(man | 0x400u), exp - 25);              // normal: (1.man) 2^(exp-15)
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits |= sign;
  std::memcpy(&v, &bits, 4);
  return v;
}

float at(const void* p, int type, long long i) {
  return type == kR16F ? half_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}
}  // namespace

extern "C" {

int cublasCreate_v2(void** handle) {
  static int slots[256];  // handles are never destroyed (like edgead's): static storage, no leak reports
  if (!handle || g_handles.size() >= 256) return kInvalidValue;
  *handle = &slots[g_handles.size()];
  g_handles.insert(*handle);
  return kOk;
}

int cublasDestroy_v2(void* handle) { return g_handles.erase(handle) ? kOk : kNotInitialized; }

int cublasSetStream_v2(void* handle, void* /*stream*/) { return g_handles.count(handle) ? kOk : kNotInitialized; }

int cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int Atype,
                 int lda, const void* B, int Btype, int ldb, const void* beta, void* C, int Ctype, int ldc,
                 int computeType, int algo) {
  if (!g_handles.count(handle)) return kNotInitialized;
  if ((transa != kOpN && transa != kOpT) || (transb != kOpN && transb != kOpT)) return kInvalidValue;
  if (m < 0 || n < 0 || k < 0) return kInvalidValue;
  const int a_rows = transa == kOpN ? m : k, b_rows = transb == kOpN ? k : n;
  if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1)) return kInvalidValue;
  if (computeType != kCompute32F || Ctype != kR32F || Atype != Btype || (Atype != kR16F && Atype != kR32F) ||
      algo != kGemmDefault)
    return kNotSupported;
  if (!alpha || !beta || (m && n && (!C || (k && (!A || !B))))) return kInvalidValue;
  ++g_calls;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  float* c = static_cast<float*>(C);
  for (long long j = 0; j < n; ++j)
    for (long long i = 0; i < m; ++i) {
      double s = 0;  // any accumulation order is allowed; double keeps the stand-in an exact-ish reference
      for (long long l = 0; l < k; ++l) {
        const float a = transa == kOpN ? at(A, Atype, i + l * (long long)lda) : at(A, Atype, l + i * (long long)lda);
        const float b = transb == kOpN ? at(B, Btype, l + j * (long long)ldb) : at(B, Btype, j + l * (long long)ldb);
        s += (double)a * (double)b;
      }
      float& out = c[i + j * (long long)ldc];
      out = be == 0.f ? (float)(al * s) : (float)(al * s + be * out);  // beta == 0: C is not read
    }
  return kOk;
}

int cudaemu_fake_cublas_calls() { return g_calls; }

}  // extern "C"

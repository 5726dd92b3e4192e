// See cublas_gemm.h. Host code only (compiled by nvcc with the other CUDA sources, and as C++ by the
// CUDA emulator's suite, which points $EDGEAD_CUBLAS at its stand-in library).
#include "common/cublas_gemm.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace edgead {
namespace {

// The C ABI of cuBLAS v2 (cublas_api.h): opaque handle, int-sized enums.
using CublasHandle = void*;
using CreateFn = int (*)(CublasHandle*);
using DestroyFn = int (*)(CublasHandle);
using SetStreamFn = int (*)(CublasHandle, cudaStream_t);
using GemmExFn = int (*)(CublasHandle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
                         int Atype, int lda, const void* B, int Btype, int ldb, const void* beta, void* C, int Ctype,
                         int ldc, int computeType, int algo);
constexpr int kOpN = 0, kOpT = 1;                // cublasOperation_t
constexpr int kR32F = 0, kR16F = 2;              // cudaDataType_t
constexpr int kCompute32F = 68;                  // cublasComputeType_t CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;                 // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT

struct Api {
  void* lib = nullptr;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;  // optional
  SetStreamFn set_stream = nullptr;
  GemmExFn gemm_ex = nullptr;
  std::string status = "not loaded";
};

Api load() {
  Api api;
  const char* env = std::getenv("EDGEAD_CUBLAS");
  std::string names[3] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  int n_names = 3;
  if (env && *env) {
    const std::string e(env);
    if (e == "0" || e == "off" || e == "OFF" || e == "none") {
      api.status = "disabled by EDGEAD_CUBLAS=" + e;
      return api;
    }
    names[0] = e;
    n_names = 1;
  }
  std::string tried;
  for (int i = 0; i < n_names; ++i) {
    void* lib = dlopen(names[i].c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = dlerror();
      tried += (tried.empty() ? "" : "; ") + names[i] + ": " + (err ? err : "not found");
      continue;
    }
    api.create = reinterpret_cast<CreateFn>(dlsym(lib, "cublasCreate_v2"));
    api.set_stream = reinterpret_cast<SetStreamFn>(dlsym(lib, "cublasSetStream_v2"));
    api.gemm_ex = reinterpret_cast<GemmExFn>(dlsym(lib, "cublasGemmEx"));
    api.destroy = reinterpret_cast<DestroyFn>(dlsym(lib, "cublasDestroy_v2"));
    if (api.create && api.set_stream && api.gemm_ex) {
      api.lib = lib;
      api.status = names[i];
      return api;
    }
    tried += (tried.empty() ? "" : "; ") + names[i] + ": cublasCreate_v2/cublasSetStream_v2/cublasGemmEx missing";
    api = Api{};
    dlclose(lib);
  }
  api.status = "cuBLAS not found (" + tried + ")";
  return api;
}

const Api& api() {
  static const Api a = load();  // thread-safe initialisation
  return a;
}

// One handle per device, created on first use and kept for the process (destroying handles at exit
// races the CUDA context's own teardown). A handle is not safe for concurrent use: the stream is set and
// the product enqueued under the device's lock (enqueueing is asynchronous, the lock is held briefly).
std::mutex g_mu;
std::map<int, CublasHandle>& handles() {
  static std::map<int, CublasHandle> h;
  return h;
}

std::string cublas_error(const char* what, int code) {
  return std::string("knn: cuBLAS ") + what + " failed with status " + std::to_string(code) + " (" + api().status + ")";
}

}  // namespace

bool cublas_available() { return api().lib != nullptr; }

void cublas_release() {
  const Api& a = api();
  if (!a.lib || !a.destroy) return;
  std::lock_guard<std::mutex> lock(g_mu);
  int prev = -1;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  for (auto& kv : handles()) {
    if (!kv.second) continue;
    if (cudaSetDevice(kv.first) == cudaSuccess) a.destroy(kv.second);  // a handle belongs to its device
    kv.second = nullptr;
  }
  if (have_prev) cudaSetDevice(prev);
}

std::string cublas_status() { return api().status; }

bool gemm_abt(bool fp16_inputs, int64_t n, int64_t m, int64_t k, float alpha, const void* A, int64_t lda,
              const void* B, int64_t ldb, float* C, int64_t ldc, cudaStream_t stream) {
  const Api& a = api();
  if (!a.lib) return false;
  if (n < 0 || m < 0 || k < 0 || n > INT_MAX || m > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
      ldc > INT_MAX)
    throw std::invalid_argument("gemm_abt: sizes must be in [0, 2^31)");
  if (n == 0 || m == 0) return true;
  int dev = 0;
  const cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) throw std::runtime_error(std::string("gemm_abt: cudaGetDevice: ") + cudaGetErrorString(e));
  std::lock_guard<std::mutex> lock(g_mu);
  CublasHandle& h = handles()[dev];
  if (!h) {
    const int st = a.create(&h);
    if (st != 0) {
      h = nullptr;
      throw std::runtime_error(cublas_error("cublasCreate", st));
    }
  }
  int st = a.set_stream(h, stream);
  if (st != 0) throw std::runtime_error(cublas_error("cublasSetStream", st));
  // Column-major view: row-major C (n x m, ldc) is column-major C^T (m x n, ldc) = B . A^T, where row-major
  // B (m x k, ldb) is column-major B^T (k x m) -> op T, and row-major A (n x k, lda) is column-major A^T
  // (k x n) -> op N.
  const float beta = 0.f;
  const int type = fp16_inputs ? kR16F : kR32F;
  st = a.gemm_ex(h, kOpT, kOpN, (int)m, (int)n, (int)k, &alpha, B, type, (int)ldb, A, type, (int)lda, &beta, C, kR32F,
                 (int)ldc, kCompute32F, kGemmDefault);
  if (st != 0) throw std::runtime_error(cublas_error("cublasGemmEx", st));
  return true;
}

}  // namespace edgead

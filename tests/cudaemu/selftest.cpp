// cudaemu self-test: the emulator's own semantics and diagnostics, each bad kernel in a forked child whose
// exit status and stderr (file:line of the offending call) are checked. Expected values follow the CUDA
// Programming Guide's descriptions of the warp intrinsics, worked out by hand.
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#define LAUNCH(k, g, b, s) ::cudaemu::make_launcher(#k, __FILE__, __LINE__, k, g, b, s, nullptr)

static int g_fail = 0;
static void check(bool ok, const char* what) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++g_fail;
}

// Runs f in a child; returns (exit status, stderr text).
static std::pair<int, std::string> in_child(const std::function<void()>& f) {
  int fd[2];
  if (pipe(fd) != 0) abort();
  fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 2);
    close(fd[0]);
    f();
    fflush(stderr);
    _exit(0);
  }
  close(fd[1]);
  std::string err;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)n);
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), err};
}
static void expect_error(const char* what, const std::function<void()>& f, const std::string& msg, int line, int code = 86) {
  auto r = in_child(f);
  const std::string at = std::string("selftest.cpp:") + std::to_string(line) + ":";
  const bool ok = r.first == code && r.second.find(msg) != std::string::npos && (line <= 0 || r.second.find(at) != std::string::npos);
  check(ok, what);
  if (!ok) printf("     exit %d, stderr: %s\n", r.first, r.second.c_str());
}

// ---- kernels ----
static int* g_out;
__global__ void shfl_kernel(int* out) {
  const int l = threadIdx.x;
  out[0 * 32 + l] = __shfl_down_sync(0xffffffffu, l, 1, 8);
  out[1 * 32 + l] = __shfl_up_sync(0xffffffffu, l, 2, 16);
  out[2 * 32 + l] = __shfl_xor_sync(0xffffffffu, l, 16, 16);
  out[3 * 32 + l] = __shfl_sync(0xffffffffu, l, 35, 16);
  out[4 * 32 + l] = __shfl_xor_sync(0xffffffffu, l, 1);
  out[5 * 32 + l] = (int)__ballot_sync(0xffffffffu, l % 3 == 0);
  out[6 * 32 + l] = (int)__match_any_sync(0xffffffffu, l / 8);
  out[7 * 32 + l] = __shfl_down_sync(0xffffffffu, l, 5);
}
__global__ void barrier_values_kernel(int* out) {
  const int t = threadIdx.x;
  const int c = __syncthreads_count(t % 4 == 0);
  const int o = __syncthreads_or(t == 37);
  const int a = __syncthreads_and(t < 1000);
  const int z = __syncthreads_and(t != 5);
  if (t == 0) out[0] = c, out[1] = o, out[2] = a, out[3] = z;
}
__global__ void exited_lanes_kernel(int* out) {
  const int l = threadIdx.x;
  if (l >= 16) return;
  out[l] = __shfl_xor_sync(0xffffffffu, l, 1);  // lanes 16..31 exited: the others still complete
}
__global__ void divergent_kernel(int*) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}
__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 128) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void warp_deadlock_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 == 7) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
    __syncthreads();
  }
  out[threadIdx.x] = v;
}
__global__ void nonparticipating_kernel(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 20);
}
__global__ void read_exited_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 8);
}
__global__ void mask_without_self_kernel(int* out) { out[threadIdx.x] = __ballot_sync(0x1u, 1); }
__global__ void dyn_smem_kernel(float* out) {
  float* s = reinterpret_cast<float*>(::cudaemu::dynamic_smem());
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void spin_kernel(int* flag) {
  while (*(volatile int*)flag == 0) {
  }
}

int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  int* d = nullptr;
  cudaMalloc(&d, 1024 * sizeof(int));
  g_out = d;

  // Warp intrinsics: width, out-of-range source lanes, ballot, match.
  LAUNCH(shfl_kernel, 1, 32, 0)(d);
  std::vector<int> h(8 * 32);
  cudaMemcpy(h.data(), d, h.size() * sizeof(int), cudaMemcpyDeviceToHost);
  bool ok = true;
  for (int l = 0; l < 32; ++l) {
    ok &= h[0 * 32 + l] == ((l % 8) == 7 ? l : l + 1);       // down within 8-lane segments
    ok &= h[1 * 32 + l] == ((l % 16) < 2 ? l : l - 2);       // up within 16-lane segments
    ok &= h[2 * 32 + l] == (l < 16 ? l : l - 16);            // xor 16, width 16: later group -> own value
    ok &= h[3 * 32 + l] == (l / 16) * 16 + 3;                // srcLane 35 mod width 16
    ok &= h[4 * 32 + l] == (l ^ 1);
    ok &= (unsigned)h[5 * 32 + l] == 0x49249249u;            // lanes 0, 3, 6, ...
    ok &= (unsigned)h[6 * 32 + l] == (0xffu << (8 * (l / 8)));
    ok &= h[7 * 32 + l] == (l + 5 < 32 ? l + 5 : l);
  }
  check(ok, "shuffle/ballot/match results (width, out-of-range lanes)");

  LAUNCH(barrier_values_kernel, 1, 256, 0)(d);
  cudaMemcpy(h.data(), d, 4 * sizeof(int), cudaMemcpyDeviceToHost);
  check(h[0] == 64 && h[1] == 1 && h[2] == 1 && h[3] == 0, "__syncthreads_count/_or/_and values");

  LAUNCH(exited_lanes_kernel, 1, 32, 0)(d);
  cudaMemcpy(h.data(), d, 16 * sizeof(int), cudaMemcpyDeviceToHost);
  ok = true;
  for (int l = 0; l < 16; ++l) ok &= h[l] == (l ^ 1);
  check(ok, "exited lanes do not hold a full-mask shuffle");

  LAUNCH(early_exit_kernel, 1, 256, 0)(d);
  check(cudaGetLastError() == cudaSuccess, "early exit before a barrier is allowed outside strict mode");

  // Launch limits through cudaGetLastError.
  LAUNCH(early_exit_kernel, 1, 1025, 0)(d);
  check(cudaGetLastError() == cudaErrorInvalidConfiguration, "block of 1025 threads: cudaErrorInvalidConfiguration");
  LAUNCH(early_exit_kernel, dim3(1, 65536), 32, 0)(d);
  check(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y = 65536: cudaErrorInvalidConfiguration");
  LAUNCH(dyn_smem_kernel, 1, 32, 50000)(reinterpret_cast<float*>(d));
  check(cudaGetLastError() == cudaErrorInvalidValue, "50000 B dynamic smem without cudaFuncSetAttribute: error");
  check(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 50000) == cudaSuccess,
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize, 50000)");
  LAUNCH(dyn_smem_kernel, 1, 32, 50000)(reinterpret_cast<float*>(d));
  check(cudaGetLastError() == cudaSuccess, "50000 B dynamic smem after cudaFuncSetAttribute: runs");
  std::vector<float> hf(32);
  cudaMemcpy(hf.data(), d, 32 * sizeof(float), cudaMemcpyDeviceToHost);
  check(std::isnan(hf[0]) && std::isnan(hf[31]), "dynamic shared memory is poisoned (reads NaN)");

  // Diagnostics: exit 86 with file:line of the offending call.
  expect_error("divergent barrier names both sites", [&] { LAUNCH(divergent_kernel, 1, 128, 0)(d); },
               "divergent barrier", 0);
  expect_error("strict mode: barrier completing after early exits",
               [&] {
                 cudaemu::set_strict(true);
                 LAUNCH(early_exit_kernel, 1, 256, 0)(d);
               },
               "strict mode", 0);
  expect_error("lane at a block barrier while its warp waits in a shuffle: deadlock",
               [&] { LAUNCH(warp_deadlock_kernel, 1, 64, 0)(d); }, "deadlock", 0);
  expect_error("reading a lane outside the mask", [&] { LAUNCH(nonparticipating_kernel, 1, 32, 0)(d); },
               "does not take part", 0);
  expect_error("reading an exited lane", [&] { LAUNCH(read_exited_kernel, 1, 32, 0)(d); }, "lane exited", 0);
  expect_error("mask without the calling lane", [&] { LAUNCH(mask_without_self_kernel, 1, 32, 0)(d); },
               "does not include the calling lane", 0);
  expect_error("double cudaFree", [&] {
    void* p = nullptr;
    cudaMalloc(&p, 16);
    cudaFree(p);
    cudaFree(p);
  }, "not a live device allocation", 0);
  expect_error("a thread spinning forever: timeout, not a hang",
               [&] {
                 cudaemu::set_timeout_s(1);
                 int* flag = nullptr;
                 cudaMalloc(&flag, 4);
                 cudaMemset(flag, 0, 4);
                 LAUNCH(spin_kernel, 1, 32, 0)(flag);
               },
               "timeout", 0, 87);
  // file:line of the offending call (the divergent barrier's first site is the line after `if`).
  auto r = in_child([&] { LAUNCH(divergent_kernel, 1, 128, 0)(d); });
  check(r.second.find("selftest.cpp:") != std::string::npos, "diagnostics carry file:line");
  cudaFree(d);
  printf("%s\n", g_fail ? "selftest FAILED" : "selftest passed");
  return g_fail ? 1 : 0;
}

// cudaemu runtime: fiber scheduler, barriers, warp ops, memory bookkeeping, runtime API (see cudaemu.h).
#include "cudaemu.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "include/cub/cub.cuh"

#if defined(__SANITIZE_ADDRESS__)
#define CUDAEMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDAEMU_ASAN 1
#endif
#endif
#ifdef CUDAEMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx = {0, 0, 0};
uint3 blockIdx = {0, 0, 0};
dim3 blockDim = dim3(1, 1, 1);
dim3 gridDim = dim3(1, 1, 1);

namespace cudaemu {
namespace {

enum State { IDLE, RUNNABLE, AT_BARRIER, AT_WARP, DONE };

// Context switches: __builtin_setjmp/__builtin_longjmp (five words: frame, resume address, stack).
// _setjmp/_longjmp would work the same, but ASan intercepts _longjmp as a "no return" and unpoisons the whole
// fiber stack (a sigaltstack syscall plus a 32 KiB shadow memset per switch, 10x slower); frames left by a
// switch here are suspended, never abandoned, so nothing needs unpoisoning.
typedef void* JmpBuf[5];
// Not declared noreturn: ASan would insert __asan_handle_no_return (the same unpoisoning) before each call.
__attribute__((noipa, no_sanitize_address)) void jump_to(JmpBuf* b) {
  if (b) __builtin_longjmp(*b, 1);  // (conditional, so that callers are not inferred noreturn either)
}

struct Fiber {
  JmpBuf jb;
  ucontext_t uc;
  char* stack = nullptr;
  size_t stack_size = 0;
  void* fake_stack = nullptr;
  bool started = false;
  int state = IDLE;
  int index = 0;  // linear thread index in the block
  uint3 tid{0, 0, 0};
  // where it waits
  const char* file = "";
  int line = 0;
  int kind = 0;  // barrier kind or warp op
  int pred = 0;
  unsigned mask = 0;
  uint64_t value = 0;
  unsigned vsize = 0;
  int b = 0, width = 32;
  uint64_t a1 = 0, a2 = 0;
  uint64_t result = 0;
};

struct Launch {
  const char* name = "";
  const char* file = "";
  int line = 0;
  ThreadFn fn = nullptr;
  void* ctx = nullptr;
  int nthreads = 0;
};

// ---- global state (one OS thread) ----
std::vector<Fiber*>& g_fibers = *new std::vector<Fiber*>();  // never destroyed: fibers live for the process
Fiber* g_cur = nullptr;
Launch g_launch;
JmpBuf g_sched_jb;
void* g_sched_fake = nullptr;
const void* g_sched_bottom = nullptr;
size_t g_sched_size = 0;
unsigned char* g_dyn = nullptr;
size_t g_dyn_size = 0;
uint64_t g_block_epoch = 0;
std::map<void*, uint64_t> g_shared_epoch;
size_t g_static_smem_block = 0;  // static __shared__ bytes seen in the current launch's first block
bool g_first_block = false;
int g_warp_arrived[32];  // lanes waiting in a warp op or exited, per warp of the current block

int g_cc_major = 9, g_cc_minor = 0;
int g_sms = 2;  // few SMs: multi-block grids stay small (knn splits, coreset partials still > 1)
int g_schedule = 0;  // 0 forward, 1 reverse, 2 random
uint64_t g_seed = 1;
bool g_strict = false;
bool g_config_read = false;
std::mt19937_64 g_rng(1);
unsigned g_timeout_s = 60;

cudaError_t g_last_error = cudaSuccess;
struct Alloc {
  size_t bytes;
  bool async;
};
std::map<uintptr_t, Alloc> g_allocs;
std::map<const void*, int> g_max_dyn_smem;
std::map<std::string, long> g_launch_counts;
uint64_t g_pool_threshold = 0;
int g_pool_dummy;
int g_inject = -1;

const char* env(const char* n) {
  const char* v = getenv(n);
  return v && *v ? v : nullptr;
}

void read_config() {
  if (g_config_read) return;
  g_config_read = true;
  if (const char* s = env("CUDAEMU_SCHEDULE")) set_schedule(s);
  if (const char* s = env("CUDAEMU_STRICT")) g_strict = atoi(s) != 0;
  if (const char* s = env("CUDAEMU_CC")) {
    int ma = 0, mi = 0;
    if (sscanf(s, "%d.%d", &ma, &mi) >= 1) {
      if (ma >= 10 && mi == 0 && !strchr(s, '.')) {  // "90" form
        mi = ma % 10;
        ma /= 10;
      }
      g_cc_major = ma;
      g_cc_minor = mi;
    }
  }
  if (const char* s = env("CUDAEMU_SMS")) g_sms = std::max(1, atoi(s));
  if (const char* s = env("CUDAEMU_TIMEOUT_S")) g_timeout_s = (unsigned)std::max(1, atoi(s));
}

int max_smem_optin() {
  const int cc = g_cc_major * 10 + g_cc_minor;
  if (cc >= 90) return 232448;
  if (cc == 80) return 166912;
  if (cc >= 86) return 101376;
  if (cc >= 80) return 166912;
  if (cc == 75) return 65536;
  if (cc >= 70) return 98304;
  return 49152;
}

std::string where() {
  char buf[512];
  if (!g_launch.fn) return "(host code)";
  snprintf(buf, sizeof buf, "kernel %s launched at %s:%d, block (%u,%u,%u), thread (%u,%u,%u)", g_launch.name,
           g_launch.file, g_launch.line, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  return buf;
}

// ---- fibers ----
#ifdef CUDAEMU_ASAN
inline void start_switch(void** save, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(save, bottom, size);
}
inline void finish_switch(void* save, const void** bottom, size_t* size) {
  __sanitizer_finish_switch_fiber(save, bottom, size);
}
#else
inline void start_switch(void**, const void*, size_t) {}
inline void finish_switch(void*, const void**, size_t*) {}
#endif

void fiber_main();

Fiber* fiber(int i) {
  while ((int)g_fibers.size() <= i) {
    Fiber* f = new Fiber();
    f->index = (int)g_fibers.size();
    size_t kb = 256;
    if (const char* s = env("CUDAEMU_STACK_KB")) kb = (size_t)std::max(64, atoi(s));
    f->stack_size = kb * 1024;
    const size_t guard = 4096;
    void* mem = mmap(nullptr, f->stack_size + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED) {
      fprintf(stderr, "cudaemu: cannot map a fiber stack\n");
      _exit(86);
    }
    mprotect(mem, guard, PROT_NONE);  // stack overflow -> SIGSEGV, not silent corruption
    f->stack = static_cast<char*>(mem) + guard;
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = f->stack_size;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_main, 0);
    g_fibers.push_back(f);
  }
  return g_fibers[i];
}

// Fiber -> scheduler. Returns when the scheduler resumes this fiber.
void to_scheduler(Fiber* f) {
  if (!__builtin_setjmp(f->jb)) {
    start_switch(&f->fake_stack, g_sched_bottom, g_sched_size);
    jump_to(&g_sched_jb);
  }
  finish_switch(f->fake_stack, &g_sched_bottom, &g_sched_size);
}

void fiber_main() {
  Fiber* f = g_cur;
  finish_switch(nullptr, &g_sched_bottom, &g_sched_size);
  for (;;) {
    g_launch.fn(g_launch.ctx);
    f = g_cur;
    f->state = DONE;
    to_scheduler(f);
  }
}

// Scheduler -> fiber, until it blocks, yields or finishes.
void resume(Fiber* f) {
  g_cur = f;
  threadIdx = f->tid;
  if (!__builtin_setjmp(g_sched_jb)) {
    start_switch(&g_sched_fake, f->stack, f->stack_size);
    if (!f->started) {
      f->started = true;
      setcontext(&f->uc);  // first entry only (makecontext'ed); later switches are jumps
    }
    jump_to(&f->jb);
  }
  finish_switch(g_sched_fake, nullptr, nullptr);
  g_cur = nullptr;
}

Fiber* current(const char* file, int line, const char* what) {
  if (!g_cur) fail(file, line, "%s called outside a kernel", what);
  return g_cur;
}

const char* op_name(int op) {
  switch (op) {
    case OP_SHFL_IDX: return "__shfl_sync";
    case OP_SHFL_UP: return "__shfl_up_sync";
    case OP_SHFL_DOWN: return "__shfl_down_sync";
    case OP_SHFL_XOR: return "__shfl_xor_sync";
    case OP_BALLOT: return "__ballot_sync";
    case OP_MATCH_ANY: return "__match_any_sync";
    case OP_SYNCWARP: return "__syncwarp";
    case OP_WMMA: return "wmma";
  }
  return "?";
}
const char* bar_name(int k) {
  switch (k) {
    case BAR_SYNC: return "__syncthreads";
    case BAR_COUNT: return "__syncthreads_count";
    case BAR_OR: return "__syncthreads_or";
    case BAR_AND: return "__syncthreads_and";
  }
  return "?";
}
bool same_site(const Fiber* a, const Fiber* b) {
  return a->line == b->line && (a->file == b->file || strcmp(a->file, b->file) == 0);
}

std::string describe(const Fiber* f) {
  char buf[256];
  const char* s = f->state == DONE ? "exited" : f->state == AT_BARRIER ? bar_name(f->kind)
                                             : f->state == AT_WARP   ? op_name(f->kind)
                                                                     : "running";
  if (f->state == AT_BARRIER || f->state == AT_WARP)
    snprintf(buf, sizeof buf, "thread %d at %s (%s:%d)", f->index, s, f->file, f->line);
  else
    snprintf(buf, sizeof buf, "thread %d %s", f->index, s);
  return buf;
}

// ---- warp ops ----
// Lanes of warp w: fibers 32w .. 32w+31 that exist in this block.
int warp_lanes(int w) { return std::min(32, g_launch.nthreads - 32 * w); }

// Completes the warp op that lane `f` waits in when every non-exited lane of its mask waits in the same
// op with the same mask. Returns true when it released lanes.
bool try_complete(Fiber* f) {
  const int w = f->index / 32, nl = warp_lanes(w);
  const unsigned existing = nl >= 32 ? 0xffffffffu : ((1u << nl) - 1);
  if (g_warp_arrived[w] < __builtin_popcount(f->mask & existing)) return false;  // someone is still running
  Fiber* lanes[32];
  for (int l = 0; l < 32; ++l) lanes[l] = l < nl ? g_fibers[32 * w + l] : nullptr;
  const unsigned mask = f->mask;
  unsigned group = 0;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    Fiber* g = lanes[l];
    if (!g || g->state == DONE) continue;  // exited (or absent) lanes do not hold the others
    if (g->state != AT_WARP || g->kind != f->kind || g->mask != mask) return false;
    group |= 1u << l;
  }
  // All participants present. Check agreement and compute the results.
  for (int l = 0; l < 32; ++l) {
    if (!(group >> l & 1u)) continue;
    Fiber* g = lanes[l];
    if (f->kind == OP_WMMA && (g->b != f->b || g->a1 != f->a1 || g->a2 != f->a2))
      fail(g->file, g->line,
           "wmma: lanes of warp %d disagree (lane %d: op %d ptr %#llx ldm/layout %#llx; lane %d at %s:%d: op %d ptr "
           "%#llx ldm/layout %#llx) [%s]",
           w, f->index % 32, f->b, (unsigned long long)f->a1, (unsigned long long)f->a2, l, g->file, g->line, g->b,
           (unsigned long long)g->a1, (unsigned long long)g->a2, where().c_str());
  }
  for (int l = 0; l < 32; ++l) {
    if (!(group >> l & 1u)) continue;
    Fiber* g = lanes[l];
    uint64_t r = 0;
    switch (g->kind) {
      case OP_SYNCWARP:
      case OP_WMMA: break;
      case OP_BALLOT:
        for (int j = 0; j < 32; ++j)
          if ((group >> j & 1u) && lanes[j]->value) r |= 1ull << j;
        break;
      case OP_MATCH_ANY:
        for (int j = 0; j < 32; ++j)
          if ((group >> j & 1u) && lanes[j]->value == g->value) r |= 1ull << j;
        break;
      default: {  // shuffles: PTX ISA shfl.sync pseudo-code, c = ((32 - width) << 8) | (up ? 0 : 31)
        const int width = g->width;
        if (width < 1 || width > 32 || (width & (width - 1)))
          fail(g->file, g->line, "%s: width %d is not a power of two in [1, 32] [%s]", op_name(g->kind), width,
               where().c_str());
        const int segmask = 32 - width;
        const int cval = g->kind == OP_SHFL_UP ? 0 : 31;
        const int maxLane = (l & segmask) | (cval & ~segmask);
        const int minLane = l & segmask;
        const int bval = g->b & 31;
        int j = l;
        bool pval = false;
        switch (g->kind) {
          case OP_SHFL_UP: j = l - bval; pval = j >= maxLane; break;
          case OP_SHFL_DOWN: j = l + bval; pval = j <= maxLane; break;
          case OP_SHFL_XOR: j = l ^ bval; pval = j <= maxLane; break;
          default: j = minLane | (bval & ~segmask); pval = j <= maxLane; break;
        }
        if (!pval) j = l;
        if (!(group >> j & 1u)) {
          Fiber* src = j < nl ? lanes[j] : nullptr;
          fail(g->file, g->line,
               "%s: lane %d reads lane %d, which does not take part (mask %#x%s) [%s, warp %d]", op_name(g->kind), l, j,
               mask, !src ? ", lane does not exist" : src->state == DONE ? ", lane exited" : ", lane not in mask",
               where().c_str(), w);
        }
        r = lanes[j]->value;
        break;
      }
    }
    g->result = r;
  }
  for (int l = 0; l < 32; ++l)
    if (group >> l & 1u) lanes[l]->state = RUNNABLE;
  g_warp_arrived[w] -= __builtin_popcount(group);
  return true;
}

// ---- block scheduling ----
std::vector<int> g_order;

void make_order(int n) {
  g_order.resize(n);
  for (int i = 0; i < n; ++i) g_order[i] = g_schedule == 1 ? n - 1 - i : i;
  if (g_schedule == 2) std::shuffle(g_order.begin(), g_order.end(), g_rng);
}

bool try_release_barrier(int n) {
  Fiber* first = nullptr;
  int waiting = 0, done = 0;
  for (int i = 0; i < n; ++i) {
    Fiber* f = g_fibers[i];
    if (f->state == DONE) {
      ++done;
      continue;
    }
    if (f->state != AT_BARRIER) return false;
    if (!first) first = f;
    ++waiting;
    if (!same_site(f, first) || f->kind != first->kind)
      fail(f->file, f->line,
           "divergent barrier: thread %d waits at %s (%s:%d) while thread %d waits at %s (%s:%d) [kernel %s launched at "
           "%s:%d, block (%u,%u,%u)]",
           f->index, bar_name(f->kind), f->file, f->line, first->index, bar_name(first->kind), first->file, first->line,
           g_launch.name, g_launch.file, g_launch.line, blockIdx.x, blockIdx.y, blockIdx.z);
  }
  if (!first) return false;
  if (g_strict && done > 0) {
    int ex = -1;
    for (int i = 0; i < n; ++i)
      if (g_fibers[i]->state == DONE) {
        ex = i;
        break;
      }
    fail(first->file, first->line,
         "strict mode: %s completes while %d thread(s) of the block exited without reaching it (first: thread %d) "
         "[kernel %s launched at %s:%d, block (%u,%u,%u)]",
         bar_name(first->kind), done, ex, g_launch.name, g_launch.file, g_launch.line, blockIdx.x, blockIdx.y,
         blockIdx.z);
  }
  int count = 0;
  for (int i = 0; i < n; ++i)
    if (g_fibers[i]->state == AT_BARRIER) count += g_fibers[i]->pred;
  int r = 0;
  switch (first->kind) {
    case BAR_COUNT: r = count; break;
    case BAR_OR: r = count > 0; break;
    case BAR_AND: r = count == waiting; break;
    default: break;
  }
  for (int i = 0; i < n; ++i)
    if (g_fibers[i]->state == AT_BARRIER) {
      g_fibers[i]->result = (uint64_t)r;
      g_fibers[i]->state = RUNNABLE;
    }
  return true;
}

[[noreturn]] void deadlock(int n) {
  // A warp op that cannot complete: name a lane it waits for and where that lane is.
  for (int i = 0; i < n; ++i) {
    Fiber* f = g_fibers[i];
    if (f->state != AT_WARP) continue;
    const int w = i / 32;
    for (int l = 0; l < 32; ++l) {
      if (!(f->mask >> l & 1u) || 32 * w + l >= n) continue;
      Fiber* g = g_fibers[32 * w + l];
      if (g->state == DONE) continue;
      if (g->state != AT_WARP || g->kind != f->kind || g->mask != f->mask)
        fail(f->file, f->line,
             "deadlock: thread %d waits in %s (mask %#x) for lane %d, which is %s [kernel %s launched at %s:%d, block "
             "(%u,%u,%u)]",
             i, op_name(f->kind), f->mask, l, describe(g).c_str(), g_launch.name, g_launch.file, g_launch.line,
             blockIdx.x, blockIdx.y, blockIdx.z);
    }
  }
  for (int i = 0; i < n; ++i) {
    Fiber* f = g_fibers[i];
    if (f->state == AT_BARRIER) fail(f->file, f->line, "deadlock at %s: %s", bar_name(f->kind), where().c_str());
  }
  fail(g_launch.file, g_launch.line, "deadlock in kernel %s (no thread can run)", g_launch.name);
}

void run_block() {
  const int n = g_launch.nthreads;
  memset(g_warp_arrived, 0, sizeof g_warp_arrived);
  for (int i = 0; i < n; ++i) {
    Fiber* f = fiber(i);
    f->tid = uint3{(unsigned)(i % blockDim.x), (unsigned)(i / blockDim.x % blockDim.y),
                   (unsigned)(i / (blockDim.x * blockDim.y))};
    f->state = RUNNABLE;
    f->file = "";
    f->line = 0;
  }
  for (;;) {
    bool any = false;
    make_order(n);
    for (int k = 0; k < n; ++k) {
      Fiber* f = g_fibers[g_order[k]];
      if (f->state != RUNNABLE) continue;
      any = true;
      resume(f);
      if (f->state == AT_WARP) try_complete(f);
      if (f->state == DONE) {
        g_warp_arrived[f->index / 32]++;  // an exited lane may complete its warp's pending op
        const int w = f->index / 32;
        for (int l = 0; l < warp_lanes(w); ++l) {
          Fiber* g = g_fibers[32 * w + l];
          if (g->state == AT_WARP && try_complete(g)) break;
        }
      }
    }
    if (any) continue;
    bool all_done = true;
    for (int i = 0; i < n; ++i) all_done &= g_fibers[i]->state == DONE;
    if (all_done) break;
    if (try_release_barrier(n)) continue;
    deadlock(n);
  }
  threadIdx = uint3{0, 0, 0};
}

void on_alarm(int) {
  char buf[1024];
  const int len = snprintf(buf, sizeof buf,
                           "cudaemu error: timeout (%u s, CUDAEMU_TIMEOUT_S) in kernel %s launched at %s:%d, block "
                           "(%u,%u,%u), thread (%u,%u,%u): a thread spins forever or the kernel is far too large\n",
                           g_timeout_s, g_launch.name, g_launch.file, g_launch.line, blockIdx.x, blockIdx.y, blockIdx.z,
                           threadIdx.x, threadIdx.y, threadIdx.z);
  if (write(2, buf, (size_t)len) < 0) {
  }
  _exit(87);
}

std::string base_name(const char* name) {
  std::string s(name);
  const size_t p = s.find('<');
  if (p != std::string::npos) s.resize(p);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

const Alloc* find_alloc(const void* p, uintptr_t* base) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  if (a >= it->first && a < it->first + std::max<size_t>(it->second.bytes, 1)) {
    if (base) *base = it->first;
    return &it->second;
  }
  return nullptr;
}

}  // namespace

// ---- public emulator API ----
void fail(const char* file, int line, const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s:%d: cudaemu error: %s\n", file, line, buf);
  fflush(stderr);
  _exit(86);
}

bool in_kernel() { return g_cur != nullptr; }
unsigned lane_id() { return g_cur ? (unsigned)(g_cur->index % 32) : 0; }

int block_barrier(const char* file, int line, int kind, int pred) {
  Fiber* f = current(file, line, bar_name(kind));
  f->state = AT_BARRIER;
  f->file = file;
  f->line = line;
  f->kind = kind;
  f->pred = pred;
  to_scheduler(f);
  return (int)f->result;
}

uint64_t warp_op(const char* file, int line, int op, unsigned mask, uint64_t value, unsigned value_size, int b,
                 int width, uint64_t a1, uint64_t a2) {
  Fiber* f = current(file, line, op_name(op));
  const int lane = f->index % 32;
  if (!(mask >> lane & 1u))
    fail(file, line, "%s: mask %#x does not include the calling lane %d [%s]", op_name(op), mask, lane,
         where().c_str());
  f->state = AT_WARP;
  f->file = file;
  f->line = line;
  f->kind = op;
  f->mask = mask;
  f->value = value_size == 8 ? value : value & ((1ull << (8 * value_size)) - 1);
  f->vsize = value_size;
  f->b = b;
  f->width = width;
  f->a1 = a1;
  f->a2 = a2;
  g_warp_arrived[f->index / 32]++;
  to_scheduler(f);
  return f->result;
}

void maybe_yield() {
  if (!g_cur || g_schedule != 2) return;
  if (g_rng() & 1) to_scheduler(g_cur);  // stays RUNNABLE: another thread may run first
}

void* dynamic_smem() {
  if (!g_cur) fail(__FILE__, __LINE__, "extern __shared__ used outside a kernel");
  return g_dyn;
}

void shared_decl(void* p, size_t bytes) {
  uint64_t& e = g_shared_epoch[p];
  if (e != g_block_epoch) {
    e = g_block_epoch;
    std::memset(p, 0xFF, bytes);  // unwritten shared memory reads as NaN / -1 / invalid bool
    if (g_first_block) g_static_smem_block += bytes;
  }
}

void launch(const char* name, const char* file, int line, const void* func, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, ThreadFn fn, void* ctx) {
  read_config();
  (void)stream;
  if (g_cur) fail(file, line, "kernel launch from device code is not supported by cudaemu");
  const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 || nthreads > 1024 ||
      block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (g_inject >= 0 && g_inject-- == 0) {
    g_last_error = cudaErrorLaunchOutOfResources;
    return;
  }
  int allowed = 49152;
  auto it = g_max_dyn_smem.find(func);
  if (it != g_max_dyn_smem.end()) allowed = std::max(allowed, it->second);
  if (smem > (size_t)allowed || smem > (size_t)max_smem_optin()) {
    g_last_error = cudaErrorInvalidValue;  // what the runtime reports for too much dynamic shared memory
    return;
  }
  g_launch_counts[base_name(name)]++;
  g_launch = Launch{name, file, line, fn, ctx, (int)nthreads};
  gridDim = grid;
  blockDim = block;
  const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
  std::vector<unsigned long long> order(nblocks);
  for (unsigned long long i = 0; i < nblocks; ++i) order[i] = g_schedule == 1 ? nblocks - 1 - i : i;
  if (g_schedule == 2) std::shuffle(order.begin(), order.end(), g_rng);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, nullptr);
  alarm(g_timeout_s);
  g_static_smem_block = 0;
  for (unsigned long long k = 0; k < nblocks; ++k) {
    const unsigned long long bi = order[k];
    blockIdx = uint3{(unsigned)(bi % grid.x), (unsigned)(bi / grid.x % grid.y), (unsigned)(bi / ((unsigned long long)grid.x * grid.y))};
    ++g_block_epoch;
    g_first_block = k == 0;
    g_dyn_size = smem;
    g_dyn = static_cast<unsigned char*>(malloc(smem ? smem : 1));  // exactly sized: ASan sees overruns
    if (smem) std::memset(g_dyn, 0xFF, smem);
    run_block();
    free(g_dyn);
    g_dyn = nullptr;
    if (k == 0 && g_static_smem_block > 49152)
      fail(file, line, "kernel %s: %zu bytes of static shared memory (limit 48 KiB)", name, g_static_smem_block);
    if (k == 0 && g_static_smem_block + smem > (size_t)max_smem_optin())
      fail(file, line, "kernel %s: %zu bytes static + %zu dynamic shared memory exceed the %d bytes of sm_%d%d", name,
           g_static_smem_block, smem, max_smem_optin(), g_cc_major, g_cc_minor);
  }
  alarm(0);
  g_launch = Launch{};
  blockIdx = uint3{0, 0, 0};
}

void set_compute_capability(int major, int minor) {
  read_config();
  g_cc_major = major;
  g_cc_minor = minor;
}
void set_multiprocessors(int sms) {
  read_config();
  g_sms = sms > 0 ? sms : 1;
}
void set_schedule(const char* spec) {
  std::string s(spec);
  if (s == "forward") {
    g_schedule = 0;
  } else if (s == "reverse") {
    g_schedule = 1;
  } else if (s.rfind("random", 0) == 0) {
    g_schedule = 2;
    g_seed = s.size() > 7 ? strtoull(s.c_str() + 7, nullptr, 10) : 1;
    g_rng.seed(g_seed);
  } else {
    fprintf(stderr, "cudaemu: unknown schedule '%s' (forward, reverse, random:SEED)\n", spec);
    _exit(86);
  }
}
void set_timeout_s(unsigned s) {
  read_config();
  g_timeout_s = s ? s : 1;
}
void set_strict(bool on) {
  read_config();
  g_strict = on;
}
size_t outstanding_allocations() { return g_allocs.size(); }
long kernel_launches(const char* base) {
  auto it = g_launch_counts.find(base);
  return it == g_launch_counts.end() ? 0 : it->second;
}
void print_kernel_counts(FILE* f) {
  for (auto& kv : g_launch_counts) fprintf(f, "cudaemu-kernel %s %ld\n", kv.first.c_str(), kv.second);
}
bool is_device_pointer(const void* p) { return find_alloc(p, nullptr) != nullptr; }
uint64_t pool_release_threshold() { return g_pool_threshold; }
void inject_launch_failure(int after) { g_inject = after; }

}  // namespace cudaemu

unsigned __activemask() {
  using namespace cudaemu;
  Fiber* f = current(__FILE__, __LINE__, "__activemask");
  const int w = f->index / 32;
  unsigned m = 0;
  for (int l = 0; l < warp_lanes(w); ++l)
    if (g_fibers[32 * w + l]->state != DONE) m |= 1u << l;
  return m;
}

namespace cub {
namespace detail {
cudaError_t temp_check(const char* what, void* d_temp, size_t bytes, size_t need) {
  uintptr_t base = 0;
  const cudaemu::Alloc* a = cudaemu::find_alloc(d_temp, &base);
  if (!a) cudaemu::fail(__FILE__, __LINE__, "cub::%s: temp storage %p is not device memory", what, d_temp);
  if (bytes < need) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(d_temp) + bytes > base + a->bytes)
    cudaemu::fail(__FILE__, __LINE__, "cub::%s: temp_storage_bytes %zu exceeds the %zu-byte allocation", what, bytes,
                  a->bytes);
  std::memset(d_temp, 0x5A, need);
  return cudaSuccess;
}
}  // namespace detail
}  // namespace cub

// ---- runtime API ----
using namespace cudaemu;

cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaError(other)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    default: return cudaGetErrorName(e);
  }
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev) {
  read_config();
  if (dev != 0) return cudaErrorInvalidDevice;
  switch (a) {
    case cudaDevAttrMaxThreadsPerBlock:
    case cudaDevAttrMaxBlockDimX: *v = 1024; break;
    case cudaDevAttrMaxGridDimX: *v = 2147483647; break;
    case cudaDevAttrMaxGridDimY: *v = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 49152; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMultiProcessorCount: *v = g_sms; break;
    case cudaDevAttrComputeCapabilityMajor: *v = g_cc_major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = g_cc_minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = max_smem_optin(); break;
    case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
static int g_stream_objs[64];
static int g_nstreams = 0;
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(&g_stream_objs[g_nstreams++ % 64]);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

static cudaError_t do_malloc(void** p, size_t bytes, bool async) {
  if (!p) return cudaErrorInvalidValue;
  void* m = malloc(bytes ? bytes : 1);
  if (!m) return cudaErrorMemoryAllocation;
  std::memset(m, 0xFF, bytes ? bytes : 1);  // uninitialised device memory reads as NaN / -1
  g_allocs[reinterpret_cast<uintptr_t>(m)] = Alloc{bytes, async};
  *p = m;
  return cudaSuccess;
}
static cudaError_t do_free(void* p, const char* what) {
  if (!p) return cudaSuccess;
  auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_allocs.end()) fail(__FILE__, __LINE__, "%s(%p): not a live device allocation (double free?)", what, p);
  std::memset(p, 0xEE, it->second.bytes);
  g_allocs.erase(it);
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) { return do_malloc(p, bytes, false); }
cudaError_t cudaFree(void* p) { return do_free(p, "cudaFree"); }
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return do_malloc(p, bytes, true); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return do_free(p, "cudaFreeAsync"); }

static void check_range(const void* p, size_t bytes, bool device, const char* what) {
  if (bytes == 0) return;
  uintptr_t base = 0;
  const Alloc* a = find_alloc(p, &base);
  if (device) {
    if (!a) fail(__FILE__, __LINE__, "%s: %p is not device memory", what, p);
    if (reinterpret_cast<uintptr_t>(p) + bytes > base + a->bytes)
      fail(__FILE__, __LINE__, "%s: %zu bytes at %p run past the end of a %zu-byte device allocation", what, bytes, p,
           a->bytes);
  } else if (a) {
    fail(__FILE__, __LINE__, "%s: %p is device memory where host memory is expected", what, p);
  }
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (kind < 0 || kind > 4) return cudaErrorInvalidMemcpyDirection;
  if (kind != cudaMemcpyDefault) {
    check_range(dst, bytes, kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice, "cudaMemcpy dst");
    check_range(src, bytes, kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice, "cudaMemcpy src");
  }
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  check_range(p, bytes, true, "cudaMemset");
  if (bytes) std::memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t bytes) { return cudaMemsetAsync(p, v, bytes, nullptr); }
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  if (!a) return cudaErrorInvalidValue;
  const bool dev = find_alloc(p, nullptr) != nullptr;
  a->type = dev ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  a->device = dev ? 0 : -2;
  a->devicePointer = dev ? const_cast<void*>(p) : nullptr;
  a->hostPointer = dev ? nullptr : const_cast<void*>(p);
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute_impl(const void* func, cudaFuncAttribute attr, int value) {
  read_config();
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > max_smem_optin()) return cudaErrorInvalidValue;
    g_max_dyn_smem[func] = value;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev) {
  if (dev != 0) return cudaErrorInvalidDevice;
  *pool = reinterpret_cast<cudaMemPool_t>(&g_pool_dummy);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetMemPool(cudaMemPool_t* pool, int dev) { return cudaDeviceGetDefaultMemPool(pool, dev); }
// Pools created by the application: their own release threshold (the default pool's is g_pool_threshold).
static std::map<cudaMemPool_t, uint64_t>& created_pools() {
  static auto* m = new std::map<cudaMemPool_t, uint64_t>();
  return *m;
}
static uint64_t* pool_threshold(cudaMemPool_t pool) {
  if (pool == reinterpret_cast<cudaMemPool_t>(&g_pool_dummy)) return &g_pool_threshold;
  auto it = created_pools().find(pool);
  return it == created_pools().end() ? nullptr : &it->second;
}
cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props) {
  if (!pool || !props || props->location.type != cudaMemLocationTypeDevice || props->location.id != 0)
    return cudaErrorInvalidValue;
  *pool = reinterpret_cast<cudaMemPool_t>(new int(0));
  created_pools()[*pool] = 0;
  return cudaSuccess;
}
cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
  auto it = created_pools().find(pool);
  if (it == created_pools().end()) return cudaErrorInvalidValue;
  created_pools().erase(it);
  delete reinterpret_cast<int*>(pool);
  return cudaSuccess;
}
cudaError_t cudaMallocFromPoolAsync(void** p, size_t bytes, cudaMemPool_t pool, cudaStream_t) {
  if (!pool_threshold(pool)) return cudaErrorInvalidValue;
  return do_malloc(p, bytes, true);
}
cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  uint64_t* th = pool_threshold(pool);
  if (!th) return cudaErrorInvalidValue;
  if (attr == cudaMemPoolAttrReleaseThreshold) {
    std::memcpy(value, th, 8);
    return cudaSuccess;
  }
  int zero = 0;
  std::memcpy(value, &zero, sizeof zero);
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  uint64_t* th = pool_threshold(pool);
  if (!th) return cudaErrorInvalidValue;
  if (attr == cudaMemPoolAttrReleaseThreshold) std::memcpy(th, value, 8);
  return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }

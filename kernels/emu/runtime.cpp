// The SIMT emulator's scheduler: blocks on OS threads, CUDA threads as fibers, barriers,
// warp exchanges, schedules and yields, with ThreadSanitizer / AddressSanitizer fiber annotations.
//
// This file is compiled WITHOUT sanitizer instrumentation even in the sanitizer builds (its own
// bookkeeping is shared by the fibers of a block by design); it tells TSan what ordering a real
// GPU guarantees instead: a fiber switch carries no ordering (`__tsan_switch_to_fiber_no_sync`),
// a barrier orders everything before it in the block before everything after it (release on
// arrival, acquire on leaving), and a kernel's end orders it before the host's next step.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pointins_emu.h"

// Fiber switches: on x86-64 a few instructions saving the callee-saved registers (and the SSE /
// x87 control words) on the stack and swapping stack pointers; elsewhere ucontext, whose
// swapcontext also saves the signal mask (a system call per switch, several times slower).
#if defined(__x86_64__) && !defined(PI_EMU_UCONTEXT)
#define PI_EMU_ASM_SWITCH 1
extern "C" void pi_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl pi_emu_switch
  .type pi_emu_switch, @function
pi_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pi_emu_switch, .-pi_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

#if defined(PI_EMU_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
}
static const unsigned kTsanNoSync = 1u;  // __tsan_switch_to_fiber_no_sync
// The emulator's own bookkeeping (ready lists, warp exchanges) is touched by every fiber of a
// block by design; inline library code it uses may be an instrumented copy from another TU, so
// its memory accesses are explicitly ignored. Synchronisation annotations still count.
#define PI_IGNORE_BEGIN() __tsan_ignore_thread_begin()
#define PI_IGNORE_END() __tsan_ignore_thread_end()
#else
#define PI_IGNORE_BEGIN() (void)0
#define PI_IGNORE_END() (void)0
#endif
#if defined(PI_EMU_ASAN)
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

namespace pi_emu {

thread_local const ThreadInfo* tl_thread = nullptr;

namespace {

[[noreturn]] void fail(const char* what, const char* kernel, const char* file, int line, const ThreadInfo* t) {
  fprintf(stderr, "\npointins CUDA emulator: %s\n  kernel %s", what, kernel ? kernel : "?");
  if (t)
    fprintf(stderr, ", block (%u,%u,%u), thread (%u,%u,%u)", t->block_idx.x, t->block_idx.y, t->block_idx.z,
            t->thread_idx.x, t->thread_idx.y, t->thread_idx.z);
  if (file) fprintf(stderr, "\n  at %s:%d", file, line);
  fprintf(stderr, "\n");
  fflush(stderr);
  abort();
}

// ---- schedule ---------------------------------------------------------------------------------
std::mutex g_schedule_mu;
Schedule g_schedule;
bool g_schedule_set = false;

Schedule parse_env() {
  Schedule s;
  const char* env = getenv("POINTINS_EMU_SCHEDULE");
  if (!env || !*env) return s;
  std::string text(env);
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq), val = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "workers")
      s.workers = std::max(1, atoi(val.c_str()));
    else if (key == "order")
      s.order = val == "reverse" ? kReverse : val == "shuffled" ? kShuffled : kForward;
    else if (key == "yield")
      s.yield = atof(val.c_str());
    else if (key == "seed")
      s.seed = strtoull(val.c_str(), nullptr, 10);
    else if (!key.empty()) {
      fprintf(stderr, "POINTINS_EMU_SCHEDULE: unknown key '%s' (workers, order, yield, seed)\n", key.c_str());
      exit(2);
    }
    pos = end + 1;
  }
  return s;
}

Schedule current_schedule() {
  std::lock_guard<std::mutex> lock(g_schedule_mu);
  if (!g_schedule_set) {
    g_schedule = parse_env();
    g_schedule_set = true;
  }
  return g_schedule;
}

std::atomic<uint64_t> g_launches{0}, g_blocks{0}, g_threads{0}, g_barriers{0}, g_warp_ops{0}, g_yields{0};
thread_local cudaError_t tl_last_error = cudaSuccess;

// ---- fibers -----------------------------------------------------------------------------------
#if defined(PI_EMU_ASAN) || defined(PI_EMU_TSAN)
constexpr size_t kStackBytes = 128 * 1024;  // instrumented frames are larger
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr size_t kGuardBytes = 4096;

enum class State { kReady, kBarrier, kWarp, kDone };

struct Block;

struct Context {
#if defined(PI_EMU_ASM_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

struct Fiber {
  ThreadInfo info;
  Context ctx;
  char* stack = nullptr;
  State state = State::kReady;
  Block* block = nullptr;
  int index = 0;  // linear thread index in the block
  const char* wait_file = nullptr;
  int wait_line = 0;
#if defined(PI_EMU_TSAN)
  void* tsan = nullptr;
#endif
#if defined(PI_EMU_ASAN)
  void* fake_stack = nullptr;
#endif
};

struct Warp {
  unsigned arrived = 0;  // lanes waiting in the current operation
  uint64_t generation = 0;  // completed operations (__syncwarp's TSan objects alternate like barriers')
  char sync[2] = {0, 0};
  unsigned mask = 0;
  WarpOp op = kShflIdx;
  int width = 32;
  const char* file = nullptr;
  int line = 0;
  uint64_t value[32] = {};
  int arg[32] = {};
  uint64_t result[32] = {};
};

struct Block {
  const char* kernel = nullptr;
  void (*body)(void*) = nullptr;
  void* body_ctx = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<int> ready;
  uint64_t rng = 0;  // splitmix64 state (no library templates shared with instrumented code)
  double yield = 0;
  bool shuffled = false;
  bool reverse = false;
  int live = 0;
  int bar_arrived = 0;
  uint64_t bar_generation = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  Context sched;
  std::vector<struct Slot*> slots;  // (stack, TSan fiber) pairs lent by the pool
  void* shared = nullptr;
  Fiber* running = nullptr;
#if defined(PI_EMU_TSAN)
  void* tsan_sched = nullptr;
  // Addresses used as TSan synchronisation objects. Barriers alternate between two: a thread
  // released into phase g+1 must not reach a slow thread still acquiring phase g (one object
  // would order a read after barrier g before another thread's write before barrier g+1).
  char barrier_sync[2] = {0, 0};
  char start_sync = 0;
  char end_sync = 0;
#endif
#if defined(PI_EMU_ASAN)
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
};

thread_local Block* tl_block = nullptr;

uint64_t next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double uniform(uint64_t& state) { return (double)(next(state) >> 11) * (1.0 / 9007199254740992.0); }
void shuffle(std::vector<int>& v, uint64_t& state) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next(state) % i]);
}
#if defined(PI_EMU_TSAN)
char g_launch_sync = 0;  // the end of every block happens before the host returns
#endif

// Fiber stacks (with a guard page) and their TSan fibers are pooled: creating a TSan fiber maps
// memory, too slow to do for every CUDA thread of every block. A slot keeps its stack and its TSan
// fiber together, so reuse only orders thread t of one block before the thread that next gets the
// slot (threads of concurrent blocks, and different slots, stay unordered for TSan).
struct Slot {
  char* stack;
#if defined(PI_EMU_TSAN)
  void* tsan;
#endif
};
std::mutex g_pool_mu;
struct Pool : std::vector<Slot*> {
  ~Pool() {  // at exit: every launch is over, every slot is back
    for (Slot* s : *this) {
      munmap(s->stack - kGuardBytes, kStackBytes + kGuardBytes);
      delete s;
    }
  }
} g_pool;

Slot* take_slot() {
  {
    std::lock_guard<std::mutex> lock(g_pool_mu);
    if (!g_pool.empty()) {
      Slot* s = g_pool.back();
      g_pool.pop_back();
      return s;
    }
  }
  void* mem = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) fail("cannot map a fiber stack", nullptr, nullptr, 0, nullptr);
  mprotect(mem, kGuardBytes, PROT_NONE);  // a stack overflow faults instead of corrupting
  Slot* s = new Slot;
  s->stack = static_cast<char*>(mem) + kGuardBytes;
#if defined(PI_EMU_TSAN)
  s->tsan = __tsan_create_fiber(0);
#endif
  return s;
}

void give_slots(std::vector<Slot*>& slots) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  for (Slot* s : slots) g_pool.push_back(s);
  slots.clear();
}

void fiber_entry();
void context_switch(Context& from, Context& to);

void switch_to_fiber(Block& b, Fiber& f) {
  b.running = &f;
  tl_thread = &f.info;
#if defined(PI_EMU_TSAN)
  __tsan_switch_to_fiber(f.tsan, kTsanNoSync);
#endif
#if defined(PI_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  context_switch(b.sched, f.ctx);
#if defined(PI_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  b.running = nullptr;
  tl_thread = nullptr;
}

// From a fiber back to its block's scheduler (the fiber's state says why).
void switch_to_scheduler(Block& b, Fiber& f, bool finished) {
  (void)finished;
#if defined(PI_EMU_TSAN)
  __tsan_switch_to_fiber(b.tsan_sched, kTsanNoSync);
#endif
#if defined(PI_EMU_ASAN)
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.fake_stack, b.sched_stack_bottom, b.sched_stack_size);
#endif
  context_switch(f.ctx, b.sched);  // never returns when finished
#if defined(PI_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &b.sched_stack_bottom, &b.sched_stack_size);
#endif
}

void fiber_entry() {
  Block& b = *tl_block;
  Fiber& f = *b.running;
#if defined(PI_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &b.sched_stack_bottom, &b.sched_stack_size);
#endif
#if defined(PI_EMU_TSAN)
  __tsan_acquire(&b.start_sync);
#endif
  b.body(b.body_ctx);
  PI_IGNORE_BEGIN();
  // Leaving: this thread no longer holds up barriers; its writes are ordered before the block's end.
#if defined(PI_EMU_TSAN)
  __tsan_release(&b.end_sync);
#endif
  f.state = State::kDone;
  --b.live;
  const int lane = f.index & 31;
  Warp& w = b.warps[f.index / 32];
  if (w.arrived && (w.mask >> lane & 1u))
    fail("a thread exited while its warp waits for it in a warp operation (mask names an exited lane)", b.kernel,
         w.file, w.line, &f.info);
  if (b.bar_arrived > 0 && b.bar_arrived == b.live) {
    for (Fiber& g : b.fibers)
      if (g.state == State::kBarrier) g.state = State::kReady, b.ready.push_back(g.index);
    b.bar_arrived = 0;
    ++b.bar_generation;
  }
  PI_IGNORE_END();
  switch_to_scheduler(b, f, true);
}

void fiber_trampoline() {
  fiber_entry();
  abort();  // unreachable: a finished fiber switches away for good
}

void context_switch(Context& from, Context& to) {
#if defined(PI_EMU_ASM_SWITCH)
  pi_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// A new fiber starts in fiber_trampoline on its own stack.
void context_init(Context& c, char* stack, size_t bytes) {
#if defined(PI_EMU_ASM_SWITCH)
  uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
  uint64_t* p = reinterpret_cast<uint64_t*>(top);
  *--p = 0;                                          // the trampoline's return address (never used)
  *--p = (uint64_t)(uintptr_t)&fiber_trampoline;     // popped by `ret`: entry with rsp = 8 mod 16
  for (int r = 0; r < 6; ++r) *--p = 0;              // rbp rbx r12 r13 r14 r15
  *--p = 0x1F80ull | (0x037Full << 32);              // default MXCSR, x87 control word
  c.sp = p;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fiber_trampoline, 0);
#endif
}

void yield_to_scheduler(Block& b, Fiber& f) {
  b.ready.push_back(f.index);
  switch_to_scheduler(b, f, false);
}

void run_block(Block& b) {
  PI_IGNORE_BEGIN();
  const int nt = (int)b.fibers.size();
#if defined(PI_EMU_TSAN)
  b.tsan_sched = __tsan_get_current_fiber();
#endif
#if defined(PI_EMU_TSAN)
  __tsan_release(&b.start_sync);  // the launch's inputs, as this thread sees them, to every fiber
#endif
  b.slots.resize(nt);
  for (int t = 0; t < nt; ++t) {
    Fiber& f = b.fibers[t];
    Slot* slot = b.slots[t] = take_slot();
    f.stack = slot->stack;
#if defined(PI_EMU_ASAN)
    __asan_unpoison_memory_region(f.stack, kStackBytes);  // redzones left by the slot's last fiber
#endif
    context_init(f.ctx, f.stack, kStackBytes);
#if defined(PI_EMU_TSAN)
    f.tsan = slot->tsan;
#endif
  }
  b.ready.clear();
  for (int t = 0; t < nt; ++t) b.ready.push_back(t);
  if (b.reverse) std::reverse(b.ready.begin(), b.ready.end());
  if (b.shuffled) shuffle(b.ready, b.rng);
  b.live = nt;
  tl_block = &b;
  while (!b.ready.empty()) {
    size_t pick = 0;
    if (b.shuffled) pick = (size_t)(next(b.rng) % b.ready.size());
    const int t = b.ready[pick];
    b.ready.erase(b.ready.begin() + (ptrdiff_t)pick);
    Fiber& f = b.fibers[t];
    f.state = State::kReady;
    switch_to_fiber(b, f);
  }
  if (b.live > 0) {
    // Nobody can run but someone waits: a barrier or warp operation that not all threads reach.
    for (Fiber& f : b.fibers)
      if (f.state == State::kBarrier || f.state == State::kWarp)
        fail(f.state == State::kBarrier ? "deadlock: __syncthreads() not reached by every live thread of the block"
                                        : "deadlock: a warp operation not reached by every lane of its mask",
             b.kernel, f.wait_file, f.wait_line, &f.info);
  }
  tl_block = nullptr;
#if defined(PI_EMU_TSAN)
  __tsan_acquire(&b.end_sync);  // every thread of the block is over ...
  __tsan_release(&g_launch_sync);  // ... before the host goes on
#endif
  give_slots(b.slots);
  PI_IGNORE_END();
}

Fiber& self(const char* what, const char* file, int line) {
  Block* b = tl_block;
  if (!b || !b->running) fail(what, nullptr, file, line, nullptr);
  return *b->running;
}

uint16_t float_to_half_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));  // Inf / NaN
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds past 65504: Inf
  if (ax < 0x33000001u) return (uint16_t)sign;                // below half the smallest subnormal: 0
  int e = (int)(ax >> 23) - 127;
  uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  int shift;
  uint32_t base;
  if (e < -14) {  // subnormal half
    shift = -e - 1;  // 13 + (-14 - e)
    base = 0;
  } else {
    shift = 13;
    base = (uint32_t)(e + 15) << 10;
    m &= 0x7fffffu;
  }
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
  return (uint16_t)(sign | (base + q));
}

float half_bits_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t x;
  if (e == 0x1f)
    x = sign | 0x7f800000u | (m << 13);
  else if (e != 0)
    x = sign | ((e + 112u) << 23) | (m << 13);
  else if (m == 0)
    x = sign;
  else {
    const float v = ldexpf((float)m, -24);
    memcpy(&x, &v, 4);
    x |= sign;
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

}  // namespace

const ThreadInfo& current() {
  if (!tl_thread) fail("threadIdx/blockIdx read outside a kernel", nullptr, nullptr, 0, nullptr);
  return *tl_thread;
}

void set_schedule(const Schedule& s) {
  std::lock_guard<std::mutex> lock(g_schedule_mu);
  g_schedule = s;
  if (g_schedule.workers < 1) g_schedule.workers = 1;
  g_schedule_set = true;
}

Schedule schedule() { return current_schedule(); }

const char* schedule_name(const Schedule& s) {
  static thread_local char buf[128];
  snprintf(buf, sizeof buf, "workers=%d,order=%s,yield=%g,seed=%llu", s.workers,
           s.order == kForward ? "forward" : s.order == kReverse ? "reverse" : "shuffled", s.yield,
           (unsigned long long)s.seed);
  return buf;
}

Stats stats() {
  return Stats{g_launches.load(), g_blocks.load(), g_threads.load(), g_barriers.load(), g_warp_ops.load(),
               g_yields.load()};
}

void yield_point() {
  Block* b = tl_block;
  if (!b || !b->running || b->yield <= 0) return;
  PI_IGNORE_BEGIN();
  if (uniform(b->rng) < b->yield) {
    ++g_yields;
    yield_to_scheduler(*b, *b->running);
  }
  PI_IGNORE_END();
}

void syncthreads(const char* file, int line) {
  PI_IGNORE_BEGIN();
  Fiber& f = self("__syncthreads() outside a kernel", file, line);
  Block& b = *f.block;
  ++g_barriers;
  if (b.bar_arrived == 0) {
    b.bar_file = file;
    b.bar_line = line;
  } else if (b.bar_line != line || strcmp(b.bar_file, file) != 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "divergent __syncthreads(): other threads of the block wait at %s:%d", b.bar_file,
             b.bar_line);
    fail(msg, b.kernel, file, line, &f.info);
  }
  const uint64_t generation = b.bar_generation;
  (void)generation;
#if defined(PI_EMU_TSAN)
  __tsan_release(&b.barrier_sync[generation & 1]);
#endif
  ++b.bar_arrived;
  if (b.bar_arrived == b.live) {
    for (Fiber& g : b.fibers)
      if (g.state == State::kBarrier) g.state = State::kReady, b.ready.push_back(g.index);
    b.bar_arrived = 0;
    ++b.bar_generation;
    yield_to_scheduler(b, f);  // the last one to arrive does not always leave first
  } else {
    f.state = State::kBarrier;
    f.wait_file = file;
    f.wait_line = line;
    switch_to_scheduler(b, f, false);
  }
#if defined(PI_EMU_TSAN)
  __tsan_acquire(&b.barrier_sync[generation & 1]);
#endif
  PI_IGNORE_END();
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  PI_IGNORE_BEGIN();
  Fiber& f = self("warp operation outside a kernel", file, line);
  Block& b = *f.block;
  ++g_warp_ops;
  const int lane = f.index & 31;
  const int warp_lanes = std::min(32, (int)b.fibers.size() - (f.index & ~31));
  const unsigned present = warp_lanes == 32 ? 0xffffffffu : ((1u << warp_lanes) - 1u);
  if (!(mask >> lane & 1u)) fail("warp operation by a lane not in its own mask", b.kernel, file, line, &f.info);
  if (mask & ~present) fail("warp operation mask names lanes beyond the block", b.kernel, file, line, &f.info);
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail("warp shuffle width must be a power of two <= 32", b.kernel, file, line, &f.info);
  Warp& w = b.warps[f.index / 32];
  if (w.arrived == 0) {
    w.mask = mask;
    w.op = op;
    w.width = width;
    w.file = file;
    w.line = line;
  } else if (w.mask != mask || w.op != op || w.width != width) {
    char msg[512];
    snprintf(msg, sizeof msg, "lanes of one warp in different warp operations (other lanes at %s:%d)", w.file, w.line);
    fail(msg, b.kernel, file, line, &f.info);
  }
  for (int l = 0; l < warp_lanes; ++l)
    if ((mask >> l & 1u) && b.fibers[(f.index & ~31) + l].state == State::kDone)
      fail("warp operation mask names an exited lane", b.kernel, file, line, &f.info);
  w.value[lane] = value;
  w.arg[lane] = arg;
  w.arrived |= 1u << lane;
  if (w.arrived == w.mask) {
    // Everyone is here: compute every lane's result, wake them.
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
      if ((w.mask >> l & 1u) && w.value[l]) ballot |= 1u << l;
    for (int l = 0; l < 32; ++l) {
      if (!(w.mask >> l & 1u)) continue;
      const int base = l & ~(w.width - 1);
      int src = l;
      switch (w.op) {
        case kShflIdx: src = base + (w.arg[l] & (w.width - 1)); break;
        case kShflXor: src = l ^ w.arg[l]; break;
        case kShflUp: src = l - w.arg[l] >= base ? l - w.arg[l] : l; break;
        case kShflDown: src = l + w.arg[l] < base + w.width ? l + w.arg[l] : l; break;
        default: break;
      }
      if (w.op == kVoteAll)
        w.result[l] = ballot == w.mask;
      else if (w.op == kVoteAny)
        w.result[l] = ballot != 0;
      else if (w.op == kVoteBallot)
        w.result[l] = ballot;
      else {
        if (src < 0 || src > 31 || !(w.mask >> src & 1u))
          fail("warp shuffle reads a lane outside the mask (undefined on the GPU)", b.kernel, file, line, &f.info);
        w.result[l] = w.value[src];
      }
    }
    for (int l = 0; l < 32; ++l) {
      if (l == lane || !(w.mask >> l & 1u)) continue;
      Fiber& g = b.fibers[(f.index & ~31) + l];
      g.state = State::kReady;
      b.ready.push_back(g.index);
    }
    w.arrived = 0;
    ++w.generation;
    yield_to_scheduler(b, f);
  } else {
    f.state = State::kWarp;
    f.wait_file = file;
    f.wait_line = line;
    switch_to_scheduler(b, f, false);
  }
  const uint64_t result = w.result[lane];
  PI_IGNORE_END();
  return result;
}

void syncwarp(unsigned mask, const char* file, int line) {
#if defined(PI_EMU_TSAN)
  PI_IGNORE_BEGIN();
  Fiber& f = self("__syncwarp() outside a kernel", file, line);
  Warp& w = f.block->warps[f.index / 32];
  char* sync = &w.sync[w.generation & 1];
  PI_IGNORE_END();
  __tsan_release(sync);
#endif
  warp_op(kVoteAll, mask == 0 ? 0xffffffffu : mask, 1, 0, 32, file, line);
#if defined(PI_EMU_TSAN)
  __tsan_acquire(sync);
#endif
}

void* dynamic_shared() {
  Block* b = tl_block;
  if (!b) fail("dynamic shared memory used outside a kernel", nullptr, nullptr, 0, nullptr);
  return b->shared;
}

cudaError_t run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx, const char* name) {
  const Schedule sched = current_schedule();
  const uint64_t nthreads = (uint64_t)cfg.block.x * cfg.block.y * cfg.block.z;
  const uint64_t nblocks = (uint64_t)cfg.grid.x * cfg.grid.y * cfg.grid.z;
  if (nthreads == 0 || nthreads > 1024 || cfg.block.x > 1024 || cfg.block.y > 1024 || cfg.block.z > 64 ||
      nblocks == 0 || cfg.grid.y > 65535 || cfg.grid.z > 65535 || cfg.grid.x > 0x7fffffffu ||
      cfg.shared_bytes > 48 * 1024) {
    if (getenv("POINTINS_EMU_VERBOSE"))
      fprintf(stderr, "pointins CUDA emulator: invalid launch of %s: grid (%u,%u,%u) block (%u,%u,%u) shared %zu\n",
              name, cfg.grid.x, cfg.grid.y, cfg.grid.z, cfg.block.x, cfg.block.y, cfg.block.z, cfg.shared_bytes);
    tl_last_error = cudaErrorInvalidConfiguration;
    return cudaErrorInvalidConfiguration;
  }
  if (nblocks > ((uint64_t)1 << 22))
    fail("the emulator runs at most 4M blocks per launch (use smaller test sizes)", name, nullptr, 0, nullptr);
  ++g_launches;
  g_blocks += nblocks;
  g_threads += nblocks * nthreads;

  std::vector<uint64_t> order(nblocks);
  for (uint64_t i = 0; i < nblocks; ++i) order[i] = i;
  std::mt19937_64 rng(sched.seed * 0x9e3779b97f4a7c15ull + g_launches.load());
  if (sched.order == kReverse) std::reverse(order.begin(), order.end());
  if (sched.order == kShuffled) std::shuffle(order.begin(), order.end(), rng);

  std::mutex mu;
  std::condition_variable cv;
  int active = 0;
  std::vector<std::thread> threads;
  std::vector<char> finished;
  auto run_one = [&](uint64_t lin, uint64_t block_seed) {
    Block b;
    b.kernel = name;
    b.body = body;
    b.body_ctx = ctx;
    b.rng = block_seed;
    b.yield = sched.yield;
    b.shuffled = sched.order == kShuffled;
    const uint3 bi{(unsigned)(lin % cfg.grid.x), (unsigned)(lin / cfg.grid.x % cfg.grid.y),
                   (unsigned)(lin / ((uint64_t)cfg.grid.x * cfg.grid.y))};
    b.fibers.resize(nthreads);
    b.warps.resize((nthreads + 31) / 32);
    for (uint64_t t = 0; t < nthreads; ++t) {
      Fiber& f = b.fibers[t];
      f.block = &b;
      f.index = (int)t;
      f.info.block_idx = bi;
      f.info.thread_idx = uint3{(unsigned)(t % cfg.block.x), (unsigned)(t / cfg.block.x % cfg.block.y),
                                (unsigned)(t / ((uint64_t)cfg.block.x * cfg.block.y))};
      f.info.block_dim = cfg.block;
      f.info.grid_dim = cfg.grid;
    }
    b.reverse = sched.order == kReverse;  // threads start last-first too
    if (cfg.shared_bytes) {
      b.shared = aligned_alloc(64, (cfg.shared_bytes + 63) / 64 * 64);
      memset(b.shared, 0xA5, cfg.shared_bytes);  // uninitialised on the GPU
    }
    run_block(b);
    free(b.shared);
  };
  auto reap = [&]() {
    for (size_t i = 0; i < threads.size(); ++i)
      if (finished[i] == 1 && threads[i].joinable()) threads[i].join(), finished[i] = 2;
  };
  threads.reserve(nblocks);
  finished.reserve(nblocks);
  for (uint64_t k = 0; k < nblocks; ++k) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return active < sched.workers; });
    reap();
    ++active;
    const size_t slot = threads.size();
    finished.push_back(0);
    const uint64_t lin = order[k], block_seed = rng();
    threads.emplace_back([&, slot, lin, block_seed] {
      run_one(lin, block_seed);
      std::lock_guard<std::mutex> g(mu);
      finished[slot] = 1;
      --active;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return active == 0; });
  }
  for (auto& t : threads)
    if (t.joinable()) t.join();
#if defined(PI_EMU_TSAN)
  __tsan_acquire(&g_launch_sync);
#endif
  return cudaSuccess;
}

}  // namespace pi_emu

cudaError_t cudaGetLastError() {
  const cudaError_t e = pi_emu::tl_last_error;
  pi_emu::tl_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return pi_emu::tl_last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    default: return "unspecified launch failure";
  }
}

float __half2float(__half h) { return pi_emu::half_bits_to_float(h.bits); }
__half __float2half_rn(float f) { return __half{pi_emu::float_to_half_bits(f)}; }
float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t x = (uint32_t)h.bits << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}
__nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((x >> 16) | 0x40u)};  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return __nv_bfloat16{(uint16_t)(x >> 16)};
}

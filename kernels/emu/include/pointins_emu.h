// SIMT emulation of the CUDA features kernels/*.cu use, for running the real kernels on the CPU.
//
// Test-only (see kernels/emu/README.md): the emulation build compiles kernels/*.cu as C++ with
// this directory first on the include path (it stands in for cuda_runtime.h, cuda_fp16.h, ...)
// after kernels/emu/rewrite.cmake has turned `k<<<g, b, s, st>>>(args)` into
// `::pi_emu::launch(k, g, b, s, st)(args)` and `extern __shared__ T name[];` into a pointer to the
// block's dynamic shared memory. Nothing here is seen by nvcc.
//
// Semantics: every thread of a block is a fiber of its own (a real stack, run by the block's
// scheduler), so `__syncthreads()` is a barrier and warp shuffles exchange values among the 32
// lanes at the call. Blocks run on OS threads, up to `workers` at once, in a chosen order, each on
// a fresh thread: static `__shared__` arrays (thread_local) start zeroed, dynamic shared memory is
// a fresh heap buffer filled with 0xA5 bytes. Atomics are real (relaxed) atomics. Undefined
// behaviour the emulator can see (a barrier reached from different lines, a warp operation whose
// mask names an exited or absent lane, a deadlock) aborts with a message naming file and line.
#pragma once

#if !defined(__cplusplus)
#error "pointins_emu.h is C++ only"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <tuple>
#include <utility>

#define POINTINS_CUDA_EMU 1

// ---- qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static

// ---- runtime API types -----------------------------------------------------------------------
typedef struct CUstream_st* cudaStream_t;
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719
};
typedef enum cudaError cudaError_t;

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);

namespace pi_emu {

// What a running CUDA thread sees: its indices and the launch shape.
struct ThreadInfo {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The running CUDA thread of this OS thread (null outside a kernel).
extern thread_local const ThreadInfo* tl_thread;
const ThreadInfo& current();

// Block-level operations, implemented by the scheduler (kernels/emu/runtime.cpp).
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
enum WarpOp { kShflIdx, kShflXor, kShflUp, kShflDown, kVoteAll, kVoteAny, kVoteBallot };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
void* dynamic_shared();
// A possible preemption point: with a yielding schedule the scheduler may switch threads here.
void yield_point();

// ---- launches ------------------------------------------------------------------------------
struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
};
// Runs body(ctx) once per thread of the grid under the current schedule; returns the launch
// error (cudaErrorInvalidConfiguration for a bad shape), also kept for cudaGetLastError().
cudaError_t run_grid(const LaunchConfig& cfg, void (*body)(void*), void* ctx, const char* name);

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  LaunchConfig cfg;
  const char* name;
  template <typename... A>
  void operator()(A&&... args) const {
    // Kernel arguments are converted to the parameter types once, as CUDA does; each thread
    // then calls the kernel with its own copies.
    struct Ctx {
      void (*kernel)(P...);
      std::tuple<P...> args;
    } ctx{kernel, std::tuple<P...>(std::forward<A>(args)...)};
    run_grid(
        cfg,
        [](void* p) {
          Ctx* c = static_cast<Ctx*>(p);
          std::apply(c->kernel, std::tuple<P...>(c->args));
        },
        &ctx, name);
  }
};

template <typename... P>
Launch<P...> launch_named(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes = 0,
                          cudaStream_t stream = nullptr) {
  (void)stream;  // the emulator runs every launch to completion, in issue order
  return Launch<P...>{kernel, LaunchConfig{grid, block, shared_bytes}, name};
}
#define PI_EMU_STR2(x) #x
#define PI_EMU_STR(x) PI_EMU_STR2(x)

// ---- schedules -----------------------------------------------------------------------------
enum BlockOrder { kForward = 0, kReverse = 1, kShuffled = 2 };
struct Schedule {
  int workers = 1;            // blocks run concurrently (each on its own OS thread)
  BlockOrder order = kForward;  // order in which blocks start; threads in a block start likewise
  double yield = 0.0;         // probability of a thread switch at each atomic / relaxed access
  uint64_t seed = 0;          // for kShuffled and the yields
};
void set_schedule(const Schedule& s);
Schedule schedule();
// POINTINS_EMU_SCHEDULE="workers=4,order=shuffled,yield=0.2,seed=7" (read once, at the first launch).
const char* schedule_name(const Schedule& s);

// Counters for tests and coverage reports.
struct Stats {
  uint64_t launches, blocks, threads, barriers, warp_ops, yields;
};
Stats stats();

// Relaxed atomic loads/stores (what a `volatile` access is on the GPU), seen as atomics by TSan.
template <typename T>
inline T load_relaxed(const T* p) {
  yield_point();
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}
template <typename T>
inline void store_relaxed(T* p, T v) {
  yield_point();
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp operations move at most 64 bits");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}

template <typename T, typename F>
inline T atomic_update(T* p, F f) {
  yield_point();
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = f(old);
  } while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}

}  // namespace pi_emu

#define threadIdx (::pi_emu::current().thread_idx)
#define blockIdx (::pi_emu::current().block_idx)
#define blockDim (::pi_emu::current().block_dim)
#define gridDim (::pi_emu::current().grid_dim)
#define warpSize 32

#define __syncthreads() ::pi_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::pi_emu::syncwarp(__VA_ARGS__ + 0, __FILE__, __LINE__)

// ---- warp shuffles and votes -----------------------------------------------------------------
template <typename T>
inline T pi_emu_shfl(::pi_emu::WarpOp op, unsigned mask, T v, int arg, int width, const char* file, int line) {
  return ::pi_emu::from_bits<T>(::pi_emu::warp_op(op, mask, ::pi_emu::to_bits(v), arg, width, file, line));
}
#define __shfl_sync(mask, v, lane, ...) \
  pi_emu_shfl(::pi_emu::kShflIdx, (mask), (v), (lane), pi_emu_width(__VA_ARGS__ + 0), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lm, ...) \
  pi_emu_shfl(::pi_emu::kShflXor, (mask), (v), (lm), pi_emu_width(__VA_ARGS__ + 0), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) \
  pi_emu_shfl(::pi_emu::kShflUp, (mask), (v), (d), pi_emu_width(__VA_ARGS__ + 0), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) \
  pi_emu_shfl(::pi_emu::kShflDown, (mask), (v), (d), pi_emu_width(__VA_ARGS__ + 0), __FILE__, __LINE__)
#define __all_sync(mask, p) \
  ((int)::pi_emu::warp_op(::pi_emu::kVoteAll, (mask), (p) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) \
  ((int)::pi_emu::warp_op(::pi_emu::kVoteAny, (mask), (p) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __ballot_sync(mask, p) \
  ((unsigned)::pi_emu::warp_op(::pi_emu::kVoteBallot, (mask), (p) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
inline int pi_emu_width(int w) { return w == 0 ? 32 : w; }

// ---- atomics (device-scope, relaxed, as CUDA's) ------------------------------------------------
inline int atomicAdd(int* p, int v) { return ::pi_emu::yield_point(), __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return ::pi_emu::yield_point(), __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return ::pi_emu::yield_point(), __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  return ::pi_emu::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::pi_emu::atomic_update(p, [v](double o) { return o + v; });
}
inline int atomicOr(int* p, int v) { return ::pi_emu::yield_point(), __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicOr(unsigned* p, unsigned v) {
  return ::pi_emu::yield_point(), __atomic_fetch_or(p, v, __ATOMIC_RELAXED);
}
inline int atomicMin(int* p, int v) {
  return ::pi_emu::atomic_update(p, [v](int o) { return o < v ? o : v; });
}
inline long long atomicMin(long long* p, long long v) {
  return ::pi_emu::atomic_update(p, [v](long long o) { return o < v ? o : v; });
}
inline int atomicMax(int* p, int v) {
  return ::pi_emu::atomic_update(p, [v](int o) { return o > v ? o : v; });
}
inline long long atomicMax(long long* p, long long v) {
  return ::pi_emu::atomic_update(p, [v](long long o) { return o > v ? o : v; });
}
inline int atomicCAS(int* p, int expected, int desired) {
  ::pi_emu::yield_point();
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long expected, unsigned long long desired) {
  ::pi_emu::yield_point();
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline int atomicExch(int* p, int v) { return ::pi_emu::yield_point(), __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- device math -----------------------------------------------------------------------------
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
// Built with -ffp-contract=off: these are single rounded operations, as on the GPU.
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll((unsigned long long)v); }
inline int __ffs(int v) { return __builtin_ffs(v); }

// ---- half precision (storage types with round-to-nearest-even conversions) -------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
float __half2float(__half h);
__half __float2half_rn(float f);
float __bfloat162float(__nv_bfloat16 h);
__nv_bfloat16 __float2bfloat16_rn(float f);

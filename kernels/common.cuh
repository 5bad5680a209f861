// Launch helpers shared by the kernels/*.cu files.
#pragma once

#include <stdint.h>

#include <cuda_runtime.h>

namespace pointins {
namespace cuda {

constexpr int kThreads = 256;

// Blocks for one thread per element; kernels loop grid-stride, so the grid can be capped.
inline unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  const int64_t cap = (int64_t)1 << 30;
  if (b < 1) b = 1;
  return (unsigned)(b < cap ? b : cap);
}

__device__ __forceinline__ int64_t thread_index() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return (int64_t)gridDim.x * blockDim.x; }

__device__ __forceinline__ int64_t atomic_cas_i64(int64_t* p, int64_t expected, int64_t desired) {
  return (int64_t)atomicCAS(reinterpret_cast<unsigned long long*>(p), (unsigned long long)expected,
                            (unsigned long long)desired);
}
__device__ __forceinline__ void atomic_min_i64(int64_t* p, int64_t v) {
  atomicMin(reinterpret_cast<long long*>(p), (long long)v);
}
__device__ __forceinline__ void atomic_add_i64(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), (unsigned long long)v);
}

// Relaxed loads and stores of words other threads update concurrently (union-find parents): a
// `volatile` access on the GPU; in the CPU emulation (kernels/emu) a relaxed atomic, so
// ThreadSanitizer tells these intended races from real ones.
#if defined(POINTINS_CUDA_EMU)
__device__ __forceinline__ int64_t load_relaxed(const int64_t* p) { return ::pi_emu::load_relaxed(p); }
__device__ __forceinline__ void store_relaxed(int64_t* p, int64_t v) { ::pi_emu::store_relaxed(p, v); }
#else
__device__ __forceinline__ int64_t load_relaxed(const int64_t* p) { return *reinterpret_cast<const volatile int64_t*>(p); }
__device__ __forceinline__ void store_relaxed(int64_t* p, int64_t v) { *reinterpret_cast<volatile int64_t*>(p) = v; }
#endif

}  // namespace cuda
}  // namespace pointins

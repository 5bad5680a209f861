// PointINS CUDA kernels: hash table on packed keys, voxel grouping and random selection,
// submanifold kernel maps. Launchers: see pointins_kernels.h.
#include <stdint.h>

#include <cuda_runtime.h>

#include "common.cuh"
#include "pointins/hash.h"
#include "pointins/keys.h"
#include "pointins/pointins_kernels.h"

namespace {

using pointins::cuda::atomic_add_i64;
using pointins::cuda::atomic_cas_i64;
using pointins::cuda::atomic_min_i64;
using pointins::cuda::grid_for;
using pointins::cuda::grid_stride;
using pointins::cuda::kThreads;
using pointins::cuda::thread_index;

__global__ void fill_kernel(int64_t* __restrict__ a, int64_t n, int64_t value) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) a[i] = value;
}

__global__ void hash_insert_kernel(const int64_t* __restrict__ keys, int64_t n, int64_t* __restrict__ tk,
                                   int64_t* __restrict__ tv, int64_t mask, int64_t* __restrict__ slots,
                                   int32_t* __restrict__ flags) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    const int64_t key = keys[i];
    if (key < 0) {
      atomicOr(flags, POINTINS_FLAG_BAD_KEY);
      if (slots) slots[i] = -1;
      continue;
    }
    int64_t s = (int64_t)(pointins::hash_mix((uint64_t)key) & (uint64_t)mask);
    while (true) {
      const int64_t prev = atomic_cas_i64(&tk[s], POINTINS_HASH_EMPTY, key);
      if (prev == POINTINS_HASH_EMPTY || prev == key) {
        atomic_min_i64(&tv[s], i);
        if (slots) slots[i] = s;
        break;
      }
      s = (s + 1) & mask;
    }
  }
}

__global__ void hash_query_kernel(const int64_t* __restrict__ tk, const int64_t* __restrict__ tv, int64_t mask,
                                  const int64_t* __restrict__ q, int64_t m, int64_t* __restrict__ out) {
  for (int64_t j = thread_index(); j < m; j += grid_stride()) out[j] = pointins::hash_lookup(tk, tv, mask, q[j]);
}

__global__ void voxel_mark_kernel(const int64_t* __restrict__ tv, const int64_t* __restrict__ slots, int64_t n,
                                  int64_t* __restrict__ is_first) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) is_first[i] = tv[slots[i]] == i ? 1 : 0;
}

__global__ void voxel_assign_kernel(const int64_t* __restrict__ tv, const int64_t* __restrict__ rank, int64_t n,
                                    int64_t* __restrict__ inv, int64_t* __restrict__ first,
                                    int64_t* __restrict__ counts) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    const int64_t rep = tv[inv[i]];  // first point of i's voxel
    const int64_t vid = rank[rep];
    inv[i] = vid;
    if (rep == i) first[vid] = i;
    atomic_add_i64(&counts[vid], 1);
  }
}

__global__ void select_kernel(const int64_t* __restrict__ inv, int64_t n, int64_t num_voxels, uint64_t seed,
                              int64_t* __restrict__ sel, int32_t* __restrict__ flags) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    const int64_t v = inv[i];
    if (v < 0 || v >= num_voxels) {
      atomicOr(flags, POINTINS_FLAG_BAD_OFFSETS);
      continue;
    }
    atomic_min_i64(&sel[v], pointins::select_pack(seed, i));
  }
}

__global__ void select_finish_kernel(int64_t* __restrict__ sel, int64_t num_voxels) {
  for (int64_t v = thread_index(); v < num_voxels; v += grid_stride())
    sel[v] = sel[v] == INT64_MAX ? -1 : pointins::select_index(sel[v]);
}

// One thread per (voxel, kernel offset): consecutive threads of a warp probe the neighbours of
// one voxel, so its coordinates are read once per warp from L1.
__global__ void kernel_map_kernel(const int32_t* __restrict__ grid, const int64_t* __restrict__ batch, int64_t n,
                                  int bits, int k, int dilation, const int64_t* __restrict__ tk,
                                  const int64_t* __restrict__ tv, int64_t mask, int64_t* __restrict__ out) {
  const int kv = k * k * k;
  const int64_t total = n * kv;
  const int64_t lim = (int64_t)1 << bits;
  for (int64_t t = thread_index(); t < total; t += grid_stride()) {
    const int64_t i = t / kv;
    const int q = (int)(t - i * kv);
    int dx, dy, dz;
    pointins::kernel_offset(q, k, dilation, &dx, &dy, &dz);
    const int64_t x = (int64_t)grid[3 * i] + dx, y = (int64_t)grid[3 * i + 1] + dy, z = (int64_t)grid[3 * i + 2] + dz;
    int64_t r = -1;
    if (x >= 0 && y >= 0 && z >= 0 && x < lim && y < lim && z < lim) {
      int64_t key;
      if (pointins::pack_key<int64_t>(x, y, z, batch ? batch[i] : 0, bits, &key) == 0)
        r = pointins::hash_lookup(tk, tv, mask, key);
    }
    out[t] = r;
  }
}

inline bool pow2(int64_t c) { return c > 0 && (c & (c - 1)) == 0; }

}  // namespace

extern "C" {

int pointins_hash_init(int64_t* table_keys, int64_t* table_vals, int64_t capacity, cudaStream_t stream) {
  if (!pow2(capacity)) return (int)cudaErrorInvalidValue;
  fill_kernel<<<grid_for(capacity), kThreads, 0, stream>>>(table_keys, capacity, POINTINS_HASH_EMPTY);
  fill_kernel<<<grid_for(capacity), kThreads, 0, stream>>>(table_vals, capacity, INT64_MAX);
  return (int)cudaGetLastError();
}

int pointins_hash_insert(const int64_t* keys, int64_t n, int64_t* table_keys, int64_t* table_vals,
                         int64_t capacity, int64_t* slots, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || !pow2(capacity) || capacity <= n) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  hash_insert_kernel<<<grid_for(n), kThreads, 0, stream>>>(keys, n, table_keys, table_vals, capacity - 1, slots,
                                                           flags);
  return (int)cudaGetLastError();
}

int pointins_hash_query(const int64_t* table_keys, const int64_t* table_vals, int64_t capacity,
                        const int64_t* queries, int64_t m, int64_t* out, cudaStream_t stream) {
  if (m < 0 || !pow2(capacity)) return (int)cudaErrorInvalidValue;
  if (m == 0) return (int)cudaSuccess;
  hash_query_kernel<<<grid_for(m), kThreads, 0, stream>>>(table_keys, table_vals, capacity - 1, queries, m, out);
  return (int)cudaGetLastError();
}

int pointins_voxel_mark(const int64_t* table_vals, const int64_t* slots, int64_t n, int64_t* is_first,
                        cudaStream_t stream) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  voxel_mark_kernel<<<grid_for(n), kThreads, 0, stream>>>(table_vals, slots, n, is_first);
  return (int)cudaGetLastError();
}

int pointins_voxel_assign(const int64_t* table_vals, const int64_t* first_rank, int64_t n, int64_t* slots_inverse,
                          int64_t* first, int64_t* counts, cudaStream_t stream) {
  if (n < 0) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  voxel_assign_kernel<<<grid_for(n), kThreads, 0, stream>>>(table_vals, first_rank, n, slots_inverse, first, counts);
  return (int)cudaGetLastError();
}

int pointins_voxel_select(const int64_t* inverse, int64_t n, int64_t num_voxels, uint64_t seed,
                          int64_t* selected, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || num_voxels < 0 || n >= ((int64_t)1 << POINTINS_SELECT_INDEX_BITS)) return (int)cudaErrorInvalidValue;
  if (num_voxels == 0) return (int)cudaSuccess;
  fill_kernel<<<grid_for(num_voxels), kThreads, 0, stream>>>(selected, num_voxels, INT64_MAX);
  if (n > 0) select_kernel<<<grid_for(n), kThreads, 0, stream>>>(inverse, n, num_voxels, seed, selected, flags);
  select_finish_kernel<<<grid_for(num_voxels), kThreads, 0, stream>>>(selected, num_voxels);
  return (int)cudaGetLastError();
}

int pointins_kernel_map(const int32_t* grid_coord, const int64_t* batch, int64_t n, int bits, int kernel_size,
                        int dilation, const int64_t* table_keys, const int64_t* table_vals, int64_t capacity,
                        int64_t* out, cudaStream_t stream) {
  if (n < 0 || !pointins::key_bits_valid(bits) || kernel_size < 1 || kernel_size % 2 == 0 || kernel_size > 7 ||
      dilation < 1 || !pow2(capacity))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  const int64_t total = n * kernel_size * kernel_size * kernel_size;
  kernel_map_kernel<<<grid_for(total), kThreads, 0, stream>>>(grid_coord, batch, n, bits, kernel_size, dilation,
                                                              table_keys, table_vals, capacity - 1, out);
  return (int)cudaGetLastError();
}

}  // extern "C"

// PointINS CUDA kernels: connected components of a radius graph within groups (cell hashing +
// lock-free union-find; see pointins/components.h). The sort of the cell keys and the cell
// boundaries are the caller's (the torch glue uses ATen; the C API documents the steps).
#include <stdint.h>

#include <cuda_runtime.h>

#include "common.cuh"
#include "pointins/components.h"
#include "pointins/hash.h"
#include "pointins/pointins_kernels.h"

namespace {

using pointins::cuda::atomic_cas_i64;
using pointins::cuda::grid_for;
using pointins::cuda::grid_stride;
using pointins::cuda::kThreads;
using pointins::cuda::load_relaxed;
using pointins::cuda::store_relaxed;
using pointins::cuda::thread_index;

template <typename T>
__global__ void cells_kernel(const T* __restrict__ coord, const int64_t* __restrict__ group, int64_t n, double h,
                             int64_t* __restrict__ cells, int32_t* __restrict__ flags) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    int f = 0;
    for (int a = 0; a < 3; ++a) {
      const double v = (double)coord[3 * i + a];
      int64_t c = 0;
      if (group[i] >= 0) {
        if (!isfinite(v)) {
          f |= POINTINS_FLAG_NONFINITE;
        } else {
          const double q = floor(v / h);
          if (!(fabs(q) < 4e15))
            f |= POINTINS_FLAG_OVERFLOW;
          else
            c = (int64_t)q;
        }
      }
      cells[3 * i + a] = c;
    }
    if (f) atomicOr(flags, f);
  }
}

__global__ void keys_kernel(const int64_t* __restrict__ cells, const int64_t* __restrict__ group, int64_t n,
                            int64_t lx, int64_t ly, int64_t lz, int bits, int64_t* __restrict__ keys) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    keys[i] = group[i] < 0 ? INT64_MAX
                           : pointins::cc_key(group[i], cells[3 * i] - lx + POINTINS_CC_REACH,
                                              cells[3 * i + 1] - ly + POINTINS_CC_REACH,
                                              cells[3 * i + 2] - lz + POINTINS_CC_REACH, bits);
  }
}

__global__ void init_parent_kernel(const int64_t* __restrict__ order, const int64_t* __restrict__ cell_of_pos,
                                   const int64_t* __restrict__ start, int64_t n_valid, int64_t* __restrict__ parent) {
  for (int64_t j = thread_index(); j < n_valid; j += grid_stride()) parent[order[j]] = order[start[cell_of_pos[j]]];
}

__device__ int64_t uf_find(int64_t* parent, int64_t x) {
  while (true) {
    const int64_t px = load_relaxed(&parent[x]);
    if (px == x) return x;
    const int64_t gp = load_relaxed(&parent[px]);
    if (gp != px) store_relaxed(&parent[x], gp);  // path halving: only ever points to an ancestor
    x = gp;
  }
}

// The root of x, reading only. The final pass must not compress paths: a halving write
// parent[x] = gp can land after another thread stored the root in parent[x], leaving an inner node
// there (a split component). Roots are fixed once linking is over, so a read-only walk is exact.
__device__ int64_t uf_root(const int64_t* parent, int64_t x) {
  int64_t px = load_relaxed(&parent[x]);
  while (px != x) {
    x = px;
    px = load_relaxed(&parent[x]);
  }
  return x;
}

__device__ void uf_union(int64_t* parent, int64_t a, int64_t b) {
  while (true) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b) return;
    if (a > b) {
      const int64_t t = a;
      a = b;
      b = t;
    }
    if (atomic_cas_i64(&parent[b], b, a) == b) return;
  }
}

template <typename T>
__global__ void link_kernel(const T* __restrict__ coord, const int64_t* __restrict__ order,
                            const int64_t* __restrict__ sorted_keys, const int64_t* __restrict__ start, int64_t m,
                            int bits, double r2, const int64_t* __restrict__ tk, const int64_t* __restrict__ tv,
                            int64_t mask, int64_t* __restrict__ parent) {
  const int64_t total = m * POINTINS_CC_HALF_STENCIL;
  for (int64_t w = thread_index(); w < total; w += grid_stride()) {
    const int64_t c = w / POINTINS_CC_HALF_STENCIL;
    int dx, dy, dz;
    pointins::cc_offset((int)(w - c * POINTINS_CC_HALF_STENCIL), &dx, &dy, &dz);
    const int64_t key = sorted_keys[start[c]];
    // Multiplies, not shifts: dx and dy may be negative (a left shift of a negative value is UB).
    const int64_t nk = key + (int64_t)dx * ((int64_t)1 << (2 * bits)) + (int64_t)dy * ((int64_t)1 << bits) + dz;
    const int64_t c2 = pointins::hash_lookup(tk, tv, mask, nk);
    if (c2 < 0) continue;
    const int64_t a0 = order[start[c]], b0 = order[start[c2]];
    if (uf_find(parent, a0) == uf_find(parent, b0)) continue;
    bool linked = false;
    for (int64_t ja = start[c]; ja < start[c + 1] && !linked; ++ja) {
      const T* pa = coord + 3 * order[ja];
      const double ax = (double)pa[0], ay = (double)pa[1], az = (double)pa[2];
      for (int64_t jb = start[c2]; jb < start[c2 + 1]; ++jb) {
        const T* pb = coord + 3 * order[jb];
        const double ex = ax - (double)pb[0], ey = ay - (double)pb[1], ez = az - (double)pb[2];
        // Rounded multiplies and adds, no FMA contraction: the same result as the CPU bit for bit.
        const double d2 = __dadd_rn(__dadd_rn(__dmul_rn(ex, ex), __dmul_rn(ey, ey)), __dmul_rn(ez, ez));
        if (d2 < r2) {
          linked = true;
          break;
        }
      }
    }
    if (linked) uf_union(parent, a0, b0);
  }
}

__global__ void finalize_kernel(const int64_t* __restrict__ group, int64_t n, int64_t* __restrict__ parent) {
  for (int64_t i = thread_index(); i < n; i += grid_stride())
    // Each thread writes only its own entry; others may be walking through it, so the store is a
    // relaxed (volatile) one like every other access to parent while threads run.
    if (group[i] >= 0) store_relaxed(&parent[i], uf_root(parent, i));
}

}  // namespace

extern "C" {

int pointins_cc_cells(int dtype, const void* coord, const int64_t* group, int64_t n, double cell_size, int64_t* cells,
                      int32_t* flags, cudaStream_t stream) {
  if (n == 0) return (int)cudaSuccess;
  if (dtype == POINTINS_F32)
    cells_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const float*>(coord), group, n, cell_size,
                                                             cells, flags);
  else if (dtype == POINTINS_F64)
    cells_kernel<double><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const double*>(coord), group, n, cell_size,
                                                              cells, flags);
  else
    return (int)cudaErrorInvalidValue;
  return (int)cudaGetLastError();
}

int pointins_cc_keys(const int64_t* cells, const int64_t* group, int64_t n, int64_t lx, int64_t ly, int64_t lz,
                     int bits, int64_t* keys, cudaStream_t stream) {
  if (n > 0) keys_kernel<<<grid_for(n), kThreads, 0, stream>>>(cells, group, n, lx, ly, lz, bits, keys);
  return (int)cudaGetLastError();
}

int pointins_cc_init_parent(const int64_t* order, const int64_t* cell_of_pos, const int64_t* start, int64_t n_valid,
                            int64_t* parent, cudaStream_t stream) {
  if (n_valid > 0)
    init_parent_kernel<<<grid_for(n_valid), kThreads, 0, stream>>>(order, cell_of_pos, start, n_valid, parent);
  return (int)cudaGetLastError();
}

int pointins_cc_link(int dtype, const void* coord, const int64_t* order, const int64_t* sorted_keys,
                     const int64_t* start, int64_t num_cells, int bits, double radius, const int64_t* table_keys,
                     const int64_t* table_vals, int64_t capacity, int64_t* parent, cudaStream_t stream) {
  const int64_t total = num_cells * POINTINS_CC_HALF_STENCIL;
  if (total == 0) return (int)cudaSuccess;
  const double r2 = radius * radius;
  if (dtype == POINTINS_F32)
    link_kernel<float><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const float*>(coord), order, sorted_keys,
                                                                start, num_cells, bits, r2, table_keys, table_vals,
                                                                capacity - 1, parent);
  else if (dtype == POINTINS_F64)
    link_kernel<double><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const double*>(coord), order,
                                                                 sorted_keys, start, num_cells, bits, r2, table_keys,
                                                                 table_vals, capacity - 1, parent);
  else
    return (int)cudaErrorInvalidValue;
  return (int)cudaGetLastError();
}

int pointins_cc_finalize(const int64_t* group, int64_t n, int64_t* parent, cudaStream_t stream) {
  if (n > 0) finalize_kernel<<<grid_for(n), kThreads, 0, stream>>>(group, n, parent);
  return (int)cudaGetLastError();
}

}  // extern "C"

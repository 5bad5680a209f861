// PointINS CUDA kernels: packed voxel keys and grid coordinates.
// Framework-free: raw pointers + cudaStream_t in, cudaError_t out (see pointins_kernels.h).

#include <stdint.h>

#include <cuda_runtime.h>

#include "pointins/keys.h"
#include "pointins/pointins_kernels.h"

namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

inline int64_t num_blocks(int64_t n) {
  // One thread per element; kernels also loop grid-stride so the grid can be capped.
  int64_t b = (n + kThreads - 1) / kThreads;
  const int64_t cap = (int64_t)1 << 30;
  return b < cap ? b : cap;
}

template <typename T>
__global__ void pack_keys_kernel(const T* __restrict__ grid, const int64_t* __restrict__ batch,
                                 int64_t n, int bits, int64_t* __restrict__ keys,
                                 int32_t* __restrict__ flags) {
  int acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = batch ? batch[i] : 0;
    int64_t key;
    acc |= pointins::pack_key<T>(grid[3 * i], grid[3 * i + 1], grid[3 * i + 2], b, bits, &key);
    keys[i] = key;
  }
  if (acc) atomicOr(flags, acc);
}

__global__ void unpack_keys_kernel(const int64_t* __restrict__ keys, int64_t n, int bits,
                                   int32_t* __restrict__ grid, int64_t* __restrict__ batch,
                                   int32_t* __restrict__ flags) {
  int acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int32_t x, y, z;
    int64_t b;
    acc |= pointins::unpack_key(keys[i], bits, &x, &y, &z, &b);
    grid[3 * i] = x;
    grid[3 * i + 1] = y;
    grid[3 * i + 2] = z;
    if (batch) batch[i] = b;
  }
  if (acc) atomicOr(flags, acc);
}

// Checks CSR offsets and initialises the per-sample minima to INT32_MAX.
__global__ void grid_init_kernel(const int64_t* __restrict__ offsets, int64_t num_samples,
                                 int64_t n, int32_t* __restrict__ mins,
                                 int32_t* __restrict__ flags) {
  for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j <= num_samples;
       j += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = offsets[j];
    bool bad = (j == 0 && o != 0) || (j == num_samples && o != n) || (j > 0 && o < offsets[j - 1]);
    if (bad) atomicOr(flags, POINTINS_FLAG_BAD_OFFSETS);
    if (j < num_samples) {
      mins[3 * j] = INT32_MAX;
      mins[3 * j + 1] = INT32_MAX;
      mins[3 * j + 2] = INT32_MAX;
    }
  }
}

// floor(coord / g) per point, plus the per-sample minimum. Points of one sample are contiguous,
// so a warp usually lies inside one sample: it then reduces in registers and issues one atomic
// per axis instead of 32.
template <typename F>
__global__ void grid_floor_kernel(const F* __restrict__ coord, const int64_t* __restrict__ offsets,
                                  int64_t num_samples, int64_t n, F gx, F gy, F gz,
                                  int32_t* __restrict__ out, int32_t* __restrict__ mins,
                                  int32_t* __restrict__ flags) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  // Loop bound identical for the whole warp (rounded up to a multiple of the warp size) so the
  // shuffles below always see all 32 lanes.
  const int64_t n_round = (n + 31) / 32 * 32;
  int acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_round; i += stride) {
    const bool valid = i < n;
    int64_t s = -1;
    int32_t v[3] = {INT32_MAX, INT32_MAX, INT32_MAX};
    if (valid) {
      s = pointins::sample_of(offsets, num_samples, i);
      acc |= pointins::grid_index<F>(coord[3 * i], gx, &v[0]);
      acc |= pointins::grid_index<F>(coord[3 * i + 1], gy, &v[1]);
      acc |= pointins::grid_index<F>(coord[3 * i + 2], gz, &v[2]);
      out[3 * i] = v[0];
      out[3 * i + 1] = v[1];
      out[3 * i + 2] = v[2];
    }
    const int64_t s0 = __shfl_sync(kFullMask, s, 0);
    const bool uniform = __all_sync(kFullMask, !valid || s == s0);
    if (uniform) {
      int32_t m[3] = {v[0], v[1], v[2]};
#pragma unroll
      for (int a = 0; a < 3; ++a) {
#pragma unroll
        for (int d = 16; d > 0; d >>= 1) m[a] = min(m[a], __shfl_xor_sync(kFullMask, m[a], d));
      }
      if ((threadIdx.x & 31) == 0 && s0 >= 0) {
        atomicMin(&mins[3 * s0], m[0]);
        atomicMin(&mins[3 * s0 + 1], m[1]);
        atomicMin(&mins[3 * s0 + 2], m[2]);
      }
    } else if (valid) {
      atomicMin(&mins[3 * s], v[0]);
      atomicMin(&mins[3 * s + 1], v[1]);
      atomicMin(&mins[3 * s + 2], v[2]);
    }
  }
  if (acc) atomicOr(flags, acc);
}

__global__ void grid_subtract_kernel(const int64_t* __restrict__ offsets, int64_t num_samples,
                                     int64_t n, const int32_t* __restrict__ mins,
                                     int32_t* __restrict__ out) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = pointins::sample_of(offsets, num_samples, i);
    out[3 * i] -= mins[3 * s];
    out[3 * i + 1] -= mins[3 * s + 1];
    out[3 * i + 2] -= mins[3 * s + 2];
  }
}

template <typename F>
int grid_coord_launch(const F* coord, const int64_t* offsets, int64_t num_samples, int64_t n,
                      F gx, F gy, F gz, int32_t* out, void* workspace, int32_t* flags,
                      cudaStream_t stream) {
  if (num_samples < 0 || n < 0) return (int)cudaErrorInvalidValue;
  int32_t* mins = static_cast<int32_t*>(workspace);
  grid_init_kernel<<<(unsigned)num_blocks(num_samples + 1), kThreads, 0, stream>>>(
      offsets, num_samples, n, mins, flags);
  if (n > 0 && num_samples > 0) {
    // Round the grid so every warp is complete (see grid_floor_kernel).
    grid_floor_kernel<F><<<(unsigned)num_blocks(n), kThreads, 0, stream>>>(
        coord, offsets, num_samples, n, gx, gy, gz, out, mins, flags);
    grid_subtract_kernel<<<(unsigned)num_blocks(n), kThreads, 0, stream>>>(offsets, num_samples,
                                                                           n, mins, out);
  }
  return (int)cudaGetLastError();
}

}  // namespace

extern "C" {

int pointins_pack_keys_i32(const int32_t* grid_coord, const int64_t* batch, int64_t n, int bits,
                           int64_t* keys, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || !pointins::key_bits_valid(bits)) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  pack_keys_kernel<int32_t><<<(unsigned)num_blocks(n), kThreads, 0, stream>>>(grid_coord, batch, n,
                                                                             bits, keys, flags);
  return (int)cudaGetLastError();
}

int pointins_pack_keys_i64(const int64_t* grid_coord, const int64_t* batch, int64_t n, int bits,
                           int64_t* keys, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || !pointins::key_bits_valid(bits)) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  pack_keys_kernel<int64_t><<<(unsigned)num_blocks(n), kThreads, 0, stream>>>(grid_coord, batch, n,
                                                                             bits, keys, flags);
  return (int)cudaGetLastError();
}

int pointins_unpack_keys(const int64_t* keys, int64_t n, int bits, int32_t* grid_coord,
                         int64_t* batch, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || !pointins::key_bits_valid(bits)) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  unpack_keys_kernel<<<(unsigned)num_blocks(n), kThreads, 0, stream>>>(keys, n, bits, grid_coord,
                                                                       batch, flags);
  return (int)cudaGetLastError();
}

int64_t pointins_grid_coord_workspace_size(int64_t num_samples) {
  return (num_samples > 0 ? num_samples : 1) * 3 * (int64_t)sizeof(int32_t);
}

int pointins_grid_coord_f32(const float* coord, const int64_t* offsets, int64_t num_samples,
                            int64_t n, float gx, float gy, float gz, int32_t* out,
                            void* workspace, int32_t* flags, cudaStream_t stream) {
  return grid_coord_launch<float>(coord, offsets, num_samples, n, gx, gy, gz, out, workspace,
                                  flags, stream);
}

int pointins_grid_coord_f64(const double* coord, const int64_t* offsets, int64_t num_samples,
                            int64_t n, double gx, double gy, double gz, int32_t* out,
                            void* workspace, int32_t* flags, cudaStream_t stream) {
  return grid_coord_launch<double>(coord, offsets, num_samples, n, gx, gy, gz, out, workspace,
                                   flags, stream);
}

}  // extern "C"

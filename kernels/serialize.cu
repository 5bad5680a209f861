// PointINS CUDA kernels: space-filling-curve serialization and PTv3 patch padding.
#include <stdint.h>

#include <cuda_runtime.h>

#include "common.cuh"
#include "pointins/keys.h"
#include "pointins/patch.h"
#include "pointins/pointins_kernels.h"
#include "pointins/serialize.h"

namespace {

using pointins::cuda::grid_for;
using pointins::cuda::grid_stride;
using pointins::cuda::kThreads;
using pointins::cuda::thread_index;

struct Orders {
  int32_t v[POINTINS_MAX_ORDERS];
  int32_t n;
};

template <typename T>
__global__ void encode_kernel(const T* __restrict__ grid, const int64_t* __restrict__ batch, int64_t n, int depth,
                              Orders orders, int64_t* __restrict__ codes, int32_t* __restrict__ flags) {
  int acc = 0;
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    const T x = grid[3 * i], y = grid[3 * i + 1], z = grid[3 * i + 2];
    const int64_t b = batch ? batch[i] : 0;
    for (int o = 0; o < orders.n; ++o)
      acc |= pointins::serialize_encode_one<T>(x, y, z, b, depth, orders.v[o], &codes[o * n + i]);
  }
  if (acc) atomicOr(flags, acc);
}

__global__ void decode_kernel(const int64_t* __restrict__ codes, int64_t n, int depth, int order,
                              int32_t* __restrict__ grid, int64_t* __restrict__ batch, int32_t* __restrict__ flags) {
  int acc = 0;
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    int64_t b;
    acc |= pointins::serialize_decode_one(codes[i], depth, order, &grid[3 * i], &grid[3 * i + 1], &grid[3 * i + 2], &b);
    if (batch) batch[i] = b;
  }
  if (acc) atomicOr(flags, acc);
}

__global__ void patch_pad_kernel(const int64_t* __restrict__ offsets, const int64_t* __restrict__ offsets_pad,
                                 int64_t num_samples, int64_t total_pad, int64_t patch_size, int64_t* __restrict__ pad) {
  for (int64_t j = thread_index(); j < total_pad; j += grid_stride()) {
    const int64_t s = pointins::sample_of(offsets_pad, num_samples, j);
    const int64_t cnt = offsets[s + 1] - offsets[s];
    pad[j] = offsets[s] + pointins::pad_source(j - offsets_pad[s], cnt, patch_size);
  }
}

__global__ void patch_unpad_kernel(const int64_t* __restrict__ offsets, const int64_t* __restrict__ offsets_pad,
                                   int64_t num_samples, int64_t n, int64_t* __restrict__ unpad) {
  for (int64_t p = thread_index(); p < n; p += grid_stride()) {
    const int64_t s = pointins::sample_of(offsets, num_samples, p);
    unpad[p] = offsets_pad[s] + (p - offsets[s]);
  }
}

template <typename T>
int encode_launch(const T* grid, const int64_t* batch, int64_t n, int depth, const int32_t* orders, int num_orders,
                  int64_t* codes, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || depth < 1 || depth > POINTINS_MAX_DEPTH || num_orders < 1 || num_orders > POINTINS_MAX_ORDERS)
    return (int)cudaErrorInvalidValue;
  Orders o;
  o.n = num_orders;
  for (int i = 0; i < POINTINS_MAX_ORDERS; ++i) o.v[i] = i < num_orders ? orders[i] : 0;
  for (int i = 0; i < num_orders; ++i)
    if (!pointins::order_valid(o.v[i])) return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  encode_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(grid, batch, n, depth, o, codes, flags);
  return (int)cudaGetLastError();
}

}  // namespace

extern "C" {

int pointins_serialize_encode_i32(const int32_t* grid_coord, const int64_t* batch, int64_t n, int depth,
                                  const int32_t* orders, int num_orders, int64_t* codes, int32_t* flags,
                                  cudaStream_t stream) {
  return encode_launch<int32_t>(grid_coord, batch, n, depth, orders, num_orders, codes, flags, stream);
}

int pointins_serialize_encode_i64(const int64_t* grid_coord, const int64_t* batch, int64_t n, int depth,
                                  const int32_t* orders, int num_orders, int64_t* codes, int32_t* flags,
                                  cudaStream_t stream) {
  return encode_launch<int64_t>(grid_coord, batch, n, depth, orders, num_orders, codes, flags, stream);
}

int pointins_serialize_decode(const int64_t* codes, int64_t n, int depth, int order, int32_t* grid_coord,
                              int64_t* batch, int32_t* flags, cudaStream_t stream) {
  if (n < 0 || depth < 1 || depth > POINTINS_MAX_DEPTH || !pointins::order_valid(order))
    return (int)cudaErrorInvalidValue;
  if (n == 0) return (int)cudaSuccess;
  decode_kernel<<<grid_for(n), kThreads, 0, stream>>>(codes, n, depth, order, grid_coord, batch, flags);
  return (int)cudaGetLastError();
}

int pointins_patch_partition(const int64_t* offsets, const int64_t* offsets_pad, int64_t num_samples, int64_t n,
                             int64_t total_pad, int64_t patch_size, int64_t* pad, int64_t* unpad,
                             cudaStream_t stream) {
  if (num_samples < 0 || n < 0 || total_pad < 0 || patch_size < 1) return (int)cudaErrorInvalidValue;
  if (total_pad > 0)
    patch_pad_kernel<<<grid_for(total_pad), kThreads, 0, stream>>>(offsets, offsets_pad, num_samples, total_pad,
                                                                    patch_size, pad);
  if (n > 0)
    patch_unpad_kernel<<<grid_for(n), kThreads, 0, stream>>>(offsets, offsets_pad, num_samples, n, unpad);
  return (int)cudaGetLastError();
}

}  // extern "C"

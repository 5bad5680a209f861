// PointINS CUDA kernels: segment reductions (sum, mean, max, min with arg, variance) over CSR
// offsets, deterministic: no atomics, every output is reduced by one thread in row order. Long
// segments (>= 2 POINTINS_SEGMENT_CHUNK rows) are cut into chunks reduced in parallel and merged
// in chunk order, so a few huge segments (or one among many small ones) still fill the GPU.
#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.cuh"
#include "pointins/pointins_kernels.h"
#include "pointins/segment.h"

namespace {

using pointins::cuda::grid_for;
using pointins::cuda::grid_stride;
using pointins::cuda::kThreads;
using pointins::cuda::thread_index;

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Partial reduction of consecutive rows: sum / Welford (mean, m2) / extremum with its row.
template <typename A>
struct Partial {
  A a;        // sum | mean (var) | extremum
  A m2;       // var only: sum of squared deviations
  int64_t n;  // rows (sum, mean, var) | row index of the extremum, -1 if none (max, min)
};

template <typename A>
__device__ __forceinline__ bool better(int reduce, A v, A best) {
  // NaN propagates: the first NaN wins and nothing replaces it.
  if (best != best) return false;
  if (v != v) return true;
  return reduce == POINTINS_REDUCE_MAX ? v > best : v < best;
}

template <typename A>
__device__ __forceinline__ Partial<A> empty_partial(int reduce) {
  Partial<A> p;
  p.a = A(0);
  p.m2 = A(0);
  p.n = (reduce == POINTINS_REDUCE_MAX || reduce == POINTINS_REDUCE_MIN) ? -1 : 0;
  return p;
}

template <typename T, typename A>
__device__ Partial<A> reduce_rows(const T* __restrict__ src, int64_t channels, int64_t c,
                                  const int64_t* __restrict__ perm, int64_t lo, int64_t hi, int reduce) {
  Partial<A> p = empty_partial<A>(reduce);
  for (int64_t j = lo; j < hi; ++j) {
    const int64_t row = perm ? perm[j] : j;
    const A v = to_acc(src[row * channels + c]);
    if (reduce == POINTINS_REDUCE_SUM || reduce == POINTINS_REDUCE_MEAN) {
      p.a += v;
      ++p.n;
    } else if (reduce == POINTINS_REDUCE_VAR) {
      ++p.n;
      const A d = v - p.a;
      p.a += d / A(p.n);
      p.m2 += d * (v - p.a);
    } else if (p.n < 0 || better(reduce, v, p.a)) {
      p.a = v;
      p.n = row;
    }
  }
  return p;
}

// Merges q (later rows) into p (earlier rows); ties keep p, i.e. the lower index.
template <typename A>
__device__ __forceinline__ void merge(Partial<A>& p, const Partial<A>& q, int reduce) {
  if (reduce == POINTINS_REDUCE_SUM || reduce == POINTINS_REDUCE_MEAN) {
    p.a += q.a;
    p.n += q.n;
  } else if (reduce == POINTINS_REDUCE_VAR) {
    if (q.n == 0) return;
    if (p.n == 0) {
      p = q;
      return;
    }
    const A n = A(p.n + q.n);
    const A delta = q.a - p.a;
    p.a += delta * (A(q.n) / n);
    p.m2 += q.m2 + delta * delta * (A(p.n) * A(q.n) / n);
    p.n += q.n;
  } else if (q.n >= 0 && (p.n < 0 || better(reduce, q.a, p.a))) {
    p = q;
  }
}

template <typename T, typename A>
__device__ __forceinline__ void finalize(const Partial<A>& p, int reduce, int correction, int64_t at, T* out,
                                         int64_t* arg, T* mean) {
  A v = A(0);
  switch (reduce) {
    case POINTINS_REDUCE_SUM:
      v = p.a;
      break;
    case POINTINS_REDUCE_MEAN:
      v = p.n > 0 ? p.a / A(p.n) : A(0);
      break;
    case POINTINS_REDUCE_VAR:
      v = p.n > correction ? p.m2 / A(p.n - correction) : A(0);
      if (mean) mean[at] = from_acc<T>(p.n > 0 ? p.a : A(0));
      break;
    default:
      v = p.n >= 0 ? p.a : A(0);
      if (arg) arg[at] = p.n;
  }
  out[at] = from_acc<T>(v);
}

// Bounds of segment s clamped into [0, n]: the offsets are validated by check_offsets_kernel in the same
// launch sequence, but its flag is read on the host only afterwards, so the reductions must never read
// out of bounds whatever the offsets hold (0 <= start <= end <= n).
__device__ __forceinline__ void segment_bounds(const int64_t* __restrict__ offsets, int64_t s, int64_t n,
                                               int64_t* start, int64_t* end) {
  const int64_t a = offsets[s], b = offsets[s + 1];
  *start = a < 0 ? 0 : (a > n ? n : a);
  *end = b < *start ? *start : (b > n ? n : b);
}

__global__ void check_offsets_kernel(const int64_t* __restrict__ offsets, int64_t num_segments, int64_t n,
                                     int exact_end, int32_t* __restrict__ flags) {
  for (int64_t s = thread_index(); s <= num_segments; s += grid_stride()) {
    const int64_t o = offsets[s];
    bool bad = o < 0 || o > n;
    if (s == 0) bad |= o != 0;
    if (s > 0) bad |= o < offsets[s - 1];
    if (s == num_segments && exact_end) bad |= o != n;
    if (bad) atomicOr(flags, POINTINS_FLAG_BAD_OFFSETS);
  }
}

template <typename T>
__global__ void segment_chunk_kernel(const T* __restrict__ src, int64_t n, int64_t channels,
                                     const int64_t* __restrict__ offsets, int64_t num_segments,
                                     const int64_t* __restrict__ perm, int reduce, int64_t slots,
                                     Partial<typename Acc<T>::type>* __restrict__ partials) {
  using A = typename Acc<T>::type;
  const int64_t total = slots * channels;
  for (int64_t t = thread_index(); t < total; t += grid_stride()) {
    const int64_t q = t / channels, c = t - q * channels;
    const int64_t s = pointins::chunk_segment(offsets, num_segments, q);
    int64_t start, end;
    segment_bounds(offsets, s, n, &start, &end);
    if (!pointins::chunk_long(end - start)) continue;  // reduced directly by the combine kernel
    const int64_t j = q - pointins::chunk_base(start);
    if (j < 0 || j >= pointins::chunk_count(end - start)) continue;  // unused slot
    const int64_t lo = start + j * POINTINS_SEGMENT_CHUNK;
    const int64_t hi = lo + POINTINS_SEGMENT_CHUNK < end ? lo + POINTINS_SEGMENT_CHUNK : end;
    partials[t] = reduce_rows<T, A>(src, channels, c, perm, lo, hi, reduce);
  }
}

template <typename T>
__global__ void segment_combine_kernel(const T* __restrict__ src, int64_t n, int64_t channels,
                                       const int64_t* __restrict__ offsets, int64_t num_segments,
                                       const int64_t* __restrict__ perm, int reduce, int correction,
                                       const Partial<typename Acc<T>::type>* __restrict__ partials,
                                       T* __restrict__ out, int64_t* __restrict__ arg, T* __restrict__ mean) {
  using A = typename Acc<T>::type;
  const int64_t total = num_segments * channels;
  for (int64_t t = thread_index(); t < total; t += grid_stride()) {
    const int64_t s = t / channels, c = t - s * channels;
    int64_t start, end;
    segment_bounds(offsets, s, n, &start, &end);
    const int64_t len = end - start;
    Partial<A> p;
    if (pointins::chunk_long(len)) {
      p = empty_partial<A>(reduce);
      const int64_t base = pointins::chunk_base(start), count = pointins::chunk_count(len);
      for (int64_t j = 0; j < count; ++j) merge(p, partials[(base + j) * channels + c], reduce);
    } else {
      p = reduce_rows<T, A>(src, channels, c, perm, start, start + len, reduce);
    }
    finalize<T, A>(p, reduce, correction, t, out, arg, mean);
  }
}

template <typename T>
int launch_csr(const void* src_v, int64_t n, int64_t channels, const int64_t* offsets, int64_t num_segments,
               const int64_t* perm, int reduce, int correction, void* out_v, int64_t* arg, void* mean_v,
               void* workspace, int32_t* flags, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const T* src = static_cast<const T*>(src_v);
  T* out = static_cast<T*>(out_v);
  T* mean = static_cast<T*>(mean_v);
  check_offsets_kernel<<<grid_for(num_segments + 1), kThreads, 0, stream>>>(offsets, num_segments, n,
                                                                           perm == nullptr, flags);
  const int64_t total = num_segments * channels;
  if (total == 0) return (int)cudaGetLastError();
  auto* partials = static_cast<Partial<A>*>(workspace);
  if (n >= 2 * POINTINS_SEGMENT_CHUNK) {  // a long segment is possible
    const int64_t slots = pointins::chunk_slots(n);
    segment_chunk_kernel<T><<<grid_for(slots * channels), kThreads, 0, stream>>>(src, n, channels, offsets,
                                                                                num_segments, perm, reduce, slots,
                                                                                partials);
  }
  segment_combine_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(src, n, channels, offsets, num_segments,
                                                                      perm, reduce, correction, partials, out, arg,
                                                                      mean);
  return (int)cudaGetLastError();
}

__global__ void segment_keys_kernel(const int64_t* __restrict__ index, int64_t n, int64_t num_segments,
                                    int64_t* __restrict__ keys, int32_t* __restrict__ flags) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) {
    const int64_t s = index[i];
    if (s >= num_segments) atomicOr(flags, POINTINS_FLAG_INDEX_RANGE);
    keys[i] = s < 0 || s >= num_segments ? num_segments : s;
  }
}

__global__ void offsets_from_sorted_kernel(const int64_t* __restrict__ sorted, int64_t n, int64_t num_segments,
                                           int64_t* __restrict__ offsets) {
  // offsets[s] = number of keys < s, for s in [0, num_segments]; keys lie in [0, num_segments].
  for (int64_t i = thread_index(); i <= n; i += grid_stride()) {
    const int64_t prev = i == 0 ? -1 : sorted[i - 1];
    const int64_t cur = i == n ? num_segments : sorted[i];
    for (int64_t s = prev + 1; s <= cur; ++s) offsets[s] = i;
  }
}

}  // namespace

extern "C" {

int64_t pointins_segment_csr_workspace_size(int64_t n, int64_t channels, int64_t num_segments) {
  if (num_segments <= 0 || n < 2 * POINTINS_SEGMENT_CHUNK) return 0;
  return pointins::chunk_slots(n) * channels * (int64_t)sizeof(Partial<double>);
}

int pointins_segment_csr(int dtype, const void* src, int64_t n, int64_t channels, const int64_t* offsets,
                         int64_t num_segments, const int64_t* perm, int reduce, int correction, void* out,
                         int64_t* arg, void* mean, void* workspace, int32_t* flags, cudaStream_t stream) {
  if (reduce < POINTINS_REDUCE_SUM || reduce > POINTINS_REDUCE_VAR || correction < 0) return (int)cudaErrorInvalidValue;
  switch (dtype) {
    case POINTINS_F32:
      return launch_csr<float>(src, n, channels, offsets, num_segments, perm, reduce, correction, out, arg, mean,
                               workspace, flags, stream);
    case POINTINS_F64:
      return launch_csr<double>(src, n, channels, offsets, num_segments, perm, reduce, correction, out, arg, mean,
                                workspace, flags, stream);
    case POINTINS_F16:
      return launch_csr<__half>(src, n, channels, offsets, num_segments, perm, reduce, correction, out, arg, mean,
                                workspace, flags, stream);
    case POINTINS_BF16:
      return launch_csr<__nv_bfloat16>(src, n, channels, offsets, num_segments, perm, reduce, correction, out, arg,
                                       mean, workspace, flags, stream);
    default:
      return (int)cudaErrorInvalidValue;
  }
}

int pointins_segment_keys(const int64_t* index, int64_t n, int64_t num_segments, int64_t* keys, int32_t* flags,
                          cudaStream_t stream) {
  if (n > 0) segment_keys_kernel<<<grid_for(n), kThreads, 0, stream>>>(index, n, num_segments, keys, flags);
  return (int)cudaGetLastError();
}

int pointins_segment_offsets_from_sorted(const int64_t* sorted_keys, int64_t n, int64_t num_segments,
                                         int64_t* offsets, cudaStream_t stream) {
  offsets_from_sorted_kernel<<<grid_for(n + 1), kThreads, 0, stream>>>(sorted_keys, n, num_segments, offsets);
  return (int)cudaGetLastError();
}

}  // extern "C"

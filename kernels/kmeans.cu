// PointINS CUDA kernels: ragged batched K-means steps (initialisation, fused assignment +
// accumulation, centroid update with empty-cluster relocation and the convergence test).
// The Lloyd loop runs on the host without synchronising: finished sets are skipped on the device.
#include <stdint.h>

#include <cuda_runtime.h>
#include <float.h>

#include "common.cuh"
#include "pointins/kmeans.h"
#include "pointins/pointins_kernels.h"

namespace {

using pointins::cuda::grid_for;
using pointins::cuda::grid_stride;
using pointins::cuda::thread_index;

constexpr int kInitThreads = 512;
constexpr int kGroup = 8;  // k-means++ candidates whose potentials are summed together (8 x 512 doubles shared)
constexpr int kTile = 256;  // points per assignment block
constexpr int kUpdateThreads = 256;
constexpr int64_t kSharedBytes = 48 * 1024;

template <typename T>
__device__ __forceinline__ double sqdist(const T* a, const T* b, int64_t D) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double t = (double)a[d] - (double)b[d];
    s += t * t;
  }
  return s;
}

// Block-wide sum (all threads get the result); blockDim.x <= 1024, a power of two.
__device__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// ---- initialisation: one block per set -------------------------------------------------------

template <typename T>
__global__ void init_kernel(const T* __restrict__ x, int64_t D, const int64_t* __restrict__ off,
                            const int64_t* __restrict__ coff, uint64_t seed, int method, int64_t trials,
                            double* __restrict__ d2,
                            T* __restrict__ cen) {
  __shared__ double csum[kInitThreads];
  __shared__ double part[kGroup * kInitThreads];
  __shared__ int64_t cand_sh[kGroup];
  __shared__ int64_t best_sh;
  __shared__ double best_pot_sh, total_sh;
  const int64_t b = blockIdx.x;
  const int64_t lo = off[b], n = off[b + 1] - lo, c0 = coff[b], kb = coff[b + 1] - c0;
  if (kb == 0 || n == 0) return;
  const T* xs = x + lo * D;
  T* cs = cen + c0 * D;
  double* ds = d2 + lo;
  if (method == POINTINS_KMEANS_RANDOM) {  // Floyd's sampling, serial (k is small)
    if (threadIdx.x == 0) {
      int64_t count = 0, draw = 0;
      for (int64_t j = n - kb; j < n; ++j) {
        int64_t t = (int64_t)(pointins::kmeans_uniform(seed, b, draw++) * (double)(j + 1));
        if (t > j) t = j;
        bool seen = false;
        for (int64_t q = 0; q < count && !seen; ++q) seen = ds[q] == (double)t;
        ds[count++] = seen ? (double)j : (double)t;  // d2 doubles as the chosen list (exact below 2^53)
      }
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < kb * D; t += blockDim.x) cs[t] = xs[(int64_t)ds[t / D] * D + t % D];
    return;
  }
  int64_t first = (int64_t)(pointins::kmeans_uniform(seed, b, 0) * (double)n);
  if (first > n - 1) first = n - 1;
  for (int64_t t = threadIdx.x; t < D; t += blockDim.x) cs[t] = xs[first * D + t];
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ds[i] = sqdist(xs + i * D, cs, D);
  __syncthreads();
  // Greedy k-means++ (pointins/kmeans.h). Thread j owns the contiguous chunk [j c, (j + 1) c) for the prefix
  // sums; thread 0 walks the chunk totals and then one chunk to find each candidate (no block-wide scans), the
  // candidates' potentials are strided partial sums that thread 0 adds in thread order: few barriers per centre
  // and a result independent of timing.
  const int64_t L = pointins::kmeans_local_trials(trials, kb);
  const int64_t chunk = (n + blockDim.x - 1) / blockDim.x;
  const int64_t my0 = (int64_t)threadIdx.x * chunk, my1 = my0 + chunk < n ? my0 + chunk : n;
  for (int64_t r = 1; r < kb; ++r) {
    double s = 0;
    for (int64_t i = my0; i < my1; ++i) s += ds[i];
    csum[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0;
      for (int j = 0; j < (int)blockDim.x; ++j) total += csum[j];
      total_sh = total;
      best_sh = -1;
    }
    __syncthreads();
    const double total = total_sh;
    for (int64_t g0 = 0; g0 < L; g0 += kGroup) {
      const int64_t G = L - g0 < kGroup ? L - g0 : kGroup;
      if (threadIdx.x == 0) {
        for (int64_t q = 0; q < G; ++q) {
          const double u = pointins::kmeans_uniform(seed, b, 1 + (r - 1) * L + g0 + q);
          int64_t pick = -1;
          if (total > 0) {  // first i with d2 > 0 whose prefix sum exceeds u x total
            const double target = u * total;
            double carry = 0;
            int j = 0;
            while (j < (int)blockDim.x && carry + csum[j] <= target) carry += csum[j++];
            for (int64_t i = (int64_t)j * chunk; i < n; ++i) {
              carry += ds[i];
              if (ds[i] > 0 && carry > target) {
                pick = i;
                break;
              }
            }
            for (int64_t i = n - 1; pick < 0 && i >= 0; --i)  // rounding at the very end: the last positive
              if (ds[i] > 0) pick = i;
          } else {
            pick = (int64_t)(u * (double)n);
            if (pick > n - 1) pick = n - 1;
          }
          cand_sh[q] = pick;
        }
      }
      __syncthreads();
      if (L > 1) {
        for (int64_t q = 0; q < G; ++q) {
          const T* cand = xs + cand_sh[q] * D;
          double pp = 0;
          for (int64_t i = threadIdx.x; i < n; i += blockDim.x) pp += fmin(ds[i], sqdist(xs + i * D, cand, D));
          part[q * kInitThreads + threadIdx.x] = pp;
        }
        __syncthreads();
      }
      if (threadIdx.x == 0) {
        for (int64_t q = 0; q < G; ++q) {
          double pot = 0;
          if (L > 1)
            for (int j = 0; j < (int)blockDim.x; ++j) pot += part[q * kInitThreads + j];
          if (best_sh < 0 || pot < best_pot_sh) {  // the first of equal potentials
            best_sh = cand_sh[q];
            best_pot_sh = pot;
          }
        }
      }
      __syncthreads();
    }
    const int64_t best = best_sh;
    for (int64_t t = threadIdx.x; t < D; t += blockDim.x) cs[r * D + t] = xs[best * D + t];
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const double nd = sqdist(xs + i * D, cs + r * D, D);
      if (nd < ds[i]) ds[i] = nd;
    }
    __syncthreads();
  }
}

// ---- assignment (+ accumulation): one block per tile of one set ------------------------------

__device__ __forceinline__ int64_t tile_set(const int64_t* off, int64_t num_sets, int64_t q) {
  int64_t lo = 0, hi = num_sets - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (off[mid] / kTile + mid <= q)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ void atomic_add_t(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_t(double* p, double v) { atomicAdd(p, v); }

template <typename T>
__global__ void assign_kernel(const T* __restrict__ x, int64_t D, const int64_t* __restrict__ off,
                              const int64_t* __restrict__ coff, int64_t num_sets, const T* __restrict__ cen,
                              const uint8_t* __restrict__ conv, int accumulate, int use_shared,
                              int64_t* __restrict__ labels, T* __restrict__ dist, T* __restrict__ sums,
                              int64_t* __restrict__ counts) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t q = blockIdx.x;
  const int64_t s = tile_set(off, num_sets, q);
  const int64_t start = off[s], end = off[s + 1];
  const int64_t lo = start + (q - (start / kTile + s)) * kTile;
  if (lo >= end || (conv && conv[s])) return;  // uniform across the block
  const int64_t c0 = coff[s], kb = coff[s + 1] - c0;
  if (kb == 0) return;
  const T* cb = cen + c0 * D;
  T* sh_sums = nullptr;
  int64_t* sh_counts = nullptr;
  if (use_shared) {
    sh_counts = reinterpret_cast<int64_t*>(smem_raw);  // 8-byte aligned first, then the T arrays
    T* sh_cen = reinterpret_cast<T*>(sh_counts + kb);
    sh_sums = sh_cen + kb * D;
    for (int64_t t = threadIdx.x; t < kb * D; t += blockDim.x) {
      sh_cen[t] = cb[t];
      sh_sums[t] = T(0);
    }
    for (int64_t t = threadIdx.x; t < kb; t += blockDim.x) sh_counts[t] = 0;
    __syncthreads();
    cb = sh_cen;
  }
  const int64_t i = lo + threadIdx.x;
  if (i < end) {
    const T* xi = x + i * D;
    T best = T(0);
    int64_t arg = 0;
    for (int64_t j = 0; j < kb; ++j) {
      T acc = T(0);
      for (int64_t d = 0; d < D; ++d) {
        const T t = xi[d] - cb[j * D + d];
        acc += t * t;
      }
      if (j == 0 || acc < best) best = acc, arg = j;
    }
    labels[i] = arg;
    dist[i] = best;
    if (accumulate) {
      if (use_shared) {
        for (int64_t d = 0; d < D; ++d) atomic_add_t(&sh_sums[arg * D + d], xi[d]);
        atomicAdd(reinterpret_cast<unsigned long long*>(&sh_counts[arg]), 1ull);
      } else {
        for (int64_t d = 0; d < D; ++d) atomic_add_t(&sums[(c0 + arg) * D + d], xi[d]);
        atomicAdd(reinterpret_cast<unsigned long long*>(&counts[c0 + arg]), 1ull);
      }
    }
  }
  if (accumulate && use_shared) {
    __syncthreads();
    for (int64_t t = threadIdx.x; t < kb * D; t += blockDim.x)
      if (sh_sums[t] != T(0)) atomic_add_t(&sums[c0 * D + t], sh_sums[t]);
    for (int64_t t = threadIdx.x; t < kb; t += blockDim.x)
      if (sh_counts[t]) atomicAdd(reinterpret_cast<unsigned long long*>(&counts[c0 + t]), (unsigned long long)sh_counts[t]);
  }
}

template <typename T>
__global__ void fill_labels_kernel(int64_t* __restrict__ labels, T* __restrict__ dist, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) labels[i] = -1, dist[i] = T(0);
}

// ---- update: one block per set -----------------------------------------------------------------

template <typename T>
__global__ void update_kernel(const T* __restrict__ x, int64_t D, const int64_t* __restrict__ off,
                              const int64_t* __restrict__ coff, const int64_t* __restrict__ labels,
                              T* __restrict__ dist, T* __restrict__ sums, int64_t* __restrict__ counts,
                              T* __restrict__ cen, const double* __restrict__ tol, uint8_t* __restrict__ conv,
                              int64_t* __restrict__ n_iter, int spherical) {
  __shared__ double sh[kUpdateThreads];
  __shared__ int64_t idx_sh[kUpdateThreads];
  const int64_t b = blockIdx.x;
  const int64_t lo = off[b], hi = off[b + 1], c0 = coff[b], kb = coff[b + 1] - c0;
  if (kb == 0 || conv[b]) return;
  // Empty clusters, in cluster order, take the farthest remaining point (lowest index on ties).
  for (int64_t j = 0; j < kb; ++j) {
    if (counts[c0 + j] != 0) continue;  // uniform: every thread reads the same value
    double bv = -1.0;
    int64_t bi = INT64_MAX;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      const double v = (double)dist[i];
      if (v > bv) bv = v, bi = i;  // ascending i per thread: ties keep the lower index
    }
    sh[threadIdx.x] = bv;
    idx_sh[threadIdx.x] = bi;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if ((int)threadIdx.x < w) {
        const double ov = sh[threadIdx.x + w];
        const int64_t oi = idx_sh[threadIdx.x + w];
        if (ov > sh[threadIdx.x] || (ov == sh[threadIdx.x] && oi < idx_sh[threadIdx.x]))
          sh[threadIdx.x] = ov, idx_sh[threadIdx.x] = oi;
      }
      __syncthreads();
    }
    const int64_t i = idx_sh[0];
    const bool found = sh[0] >= 0;
    __syncthreads();
    if (!found) break;
    const int64_t old = c0 + labels[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      sums[old * D + d] -= x[i * D + d];
      sums[(c0 + j) * D + d] = x[i * D + d];
    }
    if (threadIdx.x == 0) {
      // A cluster emptied by a move is marked -1: not re-seeded in this update (as if the empty
      // clusters were listed up front), and it keeps its old centre.
      counts[old] = counts[old] > 1 ? counts[old] - 1 : -1;
      counts[c0 + j] = 1;
      dist[i] = T(-1);  // taken
    }
    __syncthreads();
  }
  double shift = 0;
  for (int64_t j = c0 + threadIdx.x; j < c0 + kb; j += blockDim.x) {
    const int64_t cnt = counts[j];
    if (cnt <= 0) continue;
    double norm = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double v = (double)sums[j * D + d] / (double)cnt;
      norm += v * v;
    }
    if (spherical && norm == 0) continue;
    const double len = spherical ? sqrt(norm) : 1.0;  // unit length: c / sqrt(sum c_d^2)
    for (int64_t d = 0; d < D; ++d) {
      const T v = (T)((double)sums[j * D + d] / (double)cnt / len);
      const double t = (double)v - (double)cen[j * D + d];
      shift += t * t;
      cen[j * D + d] = v;
    }
  }
  const double total = block_sum(shift, sh);
  if (threadIdx.x == 0) {
    n_iter[b] += 1;
    if (tol && total <= tol[b]) conv[b] = 1;
  }
}

template <typename T>
int launch_init(const T* x, int64_t n, int64_t D, const int64_t* off, const int64_t* coff, int64_t num_sets,
                uint64_t seed, int method, int64_t trials, double* workspace, T* cen, cudaStream_t stream) {
  (void)n;
  if (num_sets > 0)
    init_kernel<T><<<(unsigned)num_sets, kInitThreads, 0, stream>>>(x, D, off, coff, seed, method, trials, workspace,
                                                                   cen);
  return (int)cudaGetLastError();
}

template <typename T>
int launch_assign(const T* x, int64_t n, int64_t D, const int64_t* off, const int64_t* coff, int64_t num_sets,
                  int64_t max_k, const T* cen, const uint8_t* conv, int accumulate, int64_t* labels, T* dist, T* sums,
                  int64_t* counts, cudaStream_t stream) {
  fill_labels_kernel<T><<<grid_for(n), pointins::cuda::kThreads, 0, stream>>>(labels, dist, n);
  if (num_sets == 0 || n == 0) return (int)cudaGetLastError();
  const int64_t shared = max_k * D * 2 * (int64_t)sizeof(T) + max_k * (int64_t)sizeof(int64_t);
  const int use_shared = shared <= kSharedBytes;
  const int64_t slots = n / kTile + num_sets + 1;
  assign_kernel<T><<<(unsigned)slots, kTile, use_shared ? (size_t)shared : 0, stream>>>(
      x, D, off, coff, num_sets, cen, conv, accumulate, use_shared, labels, dist, sums, counts);
  return (int)cudaGetLastError();
}

template <typename T>
int launch_update(const T* x, int64_t D, const int64_t* off, const int64_t* coff, int64_t num_sets,
                  const int64_t* labels, T* dist, T* sums, int64_t* counts, T* cen, const double* tol, uint8_t* conv,
                  int64_t* n_iter, int spherical, cudaStream_t stream) {
  if (num_sets > 0)
    update_kernel<T><<<(unsigned)num_sets, kUpdateThreads, 0, stream>>>(x, D, off, coff, labels, dist, sums, counts,
                                                                      cen, tol, conv, n_iter, spherical);
  return (int)cudaGetLastError();
}

}  // namespace

extern "C" {

int pointins_kmeans_init(int dtype, const void* x, int64_t n, int64_t D, const int64_t* offsets, const int64_t* coff,
                         int64_t num_sets, uint64_t seed, int method, int64_t local_trials, double* workspace,
                         void* centroids, cudaStream_t stream) {
  if (local_trials < 0) return (int)cudaErrorInvalidValue;
  if (dtype == POINTINS_F32)
    return launch_init<float>(static_cast<const float*>(x), n, D, offsets, coff, num_sets, seed, method, local_trials,
                              workspace, static_cast<float*>(centroids), stream);
  if (dtype == POINTINS_F64)
    return launch_init<double>(static_cast<const double*>(x), n, D, offsets, coff, num_sets, seed, method,
                               local_trials, workspace, static_cast<double*>(centroids), stream);
  return (int)cudaErrorInvalidValue;
}

int pointins_kmeans_assign(int dtype, const void* x, int64_t n, int64_t D, const int64_t* offsets, const int64_t* coff,
                           int64_t num_sets, int64_t max_k, const void* centroids, const uint8_t* converged,
                           int accumulate, int64_t* labels, void* dist, void* sums, int64_t* counts,
                           cudaStream_t stream) {
  if (dtype == POINTINS_F32)
    return launch_assign<float>(static_cast<const float*>(x), n, D, offsets, coff, num_sets, max_k,
                                static_cast<const float*>(centroids), converged, accumulate, labels,
                                static_cast<float*>(dist), static_cast<float*>(sums), counts, stream);
  if (dtype == POINTINS_F64)
    return launch_assign<double>(static_cast<const double*>(x), n, D, offsets, coff, num_sets, max_k,
                                 static_cast<const double*>(centroids), converged, accumulate, labels,
                                 static_cast<double*>(dist), static_cast<double*>(sums), counts, stream);
  return (int)cudaErrorInvalidValue;
}

int pointins_kmeans_update(int dtype, const void* x, int64_t D, const int64_t* offsets, const int64_t* coff,
                           int64_t num_sets, const int64_t* labels, void* dist, void* sums, int64_t* counts,
                           void* centroids, const double* tol, uint8_t* converged, int64_t* n_iter, int spherical,
                           cudaStream_t stream) {
  if (dtype == POINTINS_F32)
    return launch_update<float>(static_cast<const float*>(x), D, offsets, coff, num_sets, labels,
                                static_cast<float*>(dist), static_cast<float*>(sums), counts,
                                static_cast<float*>(centroids), tol, converged, n_iter, spherical, stream);
  if (dtype == POINTINS_F64)
    return launch_update<double>(static_cast<const double*>(x), D, offsets, coff, num_sets, labels,
                                 static_cast<double*>(dist), static_cast<double*>(sums), counts,
                                 static_cast<double*>(centroids), tol, converged, n_iter, spherical, stream);
  return (int)cudaErrorInvalidValue;
}

}  // extern "C"

// CPU segment reductions over CSR offsets (and segment ids, through a stable counting sort).
// Each (segment, channel block) is reduced by one thread in row order: results are bitwise
// identical for any number of threads, and the first extremum found (lowest index) wins ties.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/segment.h"

namespace pointins {
namespace {

// Stable counting sort of segment ids: perm lists the points of segment 0, then 1, ... in
// ascending index order; ignored points (negative ids) come last. offsets[S] = valid points.
std::tuple<at::Tensor, at::Tensor> segment_index_csr_cpu(const at::Tensor& index_in, int64_t num_segments) {
  check_segment_index_args(index_in, num_segments);
  check_cpu(index_in, "index", "segment_reduce");
  auto index = index_in.contiguous();
  const int64_t n = index.numel();
  const int64_t* idx = index.data_ptr<int64_t>();
  const int64_t S = num_segments;
  auto offsets = at::zeros({S + 1}, index.options());
  auto perm = at::empty({n}, index.options());
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t* pm = perm.data_ptr<int64_t>();
  // Chunks of the input, each counted and placed by one thread (chunks in order => stable).
  const int64_t chunk = std::max<int64_t>(1 << 16, (n + at::get_num_threads() - 1) / std::max(1, at::get_num_threads()));
  const int64_t num_chunks = std::max<int64_t>(1, (n + chunk - 1) / chunk);
  std::vector<int64_t> hist((size_t)num_chunks * (S + 1), 0);  // bucket S = ignored points
  std::atomic<bool> out_of_range{false};
  at::parallel_for(0, num_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* h = hist.data() + c * (S + 1);
      bool bad = false;
      for (int64_t i = c * chunk, e = std::min(n, (c + 1) * chunk); i < e; ++i) {
        const int64_t s = idx[i];
        bad |= s >= S;
        ++h[s < 0 || s >= S ? S : s];
      }
      if (bad) out_of_range.store(true, std::memory_order_relaxed);
    }
  });
  if (out_of_range.load()) raise_segment_index_range(index, num_segments);
  // Exclusive starts per (bucket, chunk), buckets outer: stable placement.
  int64_t run = 0;
  for (int64_t s = 0; s <= S; ++s) {
    off[s] = run;
    for (int64_t c = 0; c < num_chunks; ++c) {
      int64_t& h = hist[(size_t)c * (S + 1) + s];
      const int64_t cnt = h;
      h = run;
      run += cnt;
    }
  }
  at::parallel_for(0, num_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* h = hist.data() + c * (S + 1);
      for (int64_t i = c * chunk, e = std::min(n, (c + 1) * chunk); i < e; ++i) {
        const int64_t s = idx[i];
        pm[h[s < 0 || s >= S ? S : s]++] = i;
      }
    }
  });
  return {perm, offsets};
}

// Gathered rows (segment ids path) are latency-bound random reads: prefetch a few rows ahead,
// across segment boundaries.
constexpr int64_t kPrefetch = 12;
template <typename T>
inline void prefetch_row(const T* p, int64_t w) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < w * (int64_t)sizeof(T); b += 64) __builtin_prefetch(c + b);
}

// One row into the running extrema: branch-free selects (vectorisable). NaN propagates: the
// first NaN wins and nothing replaces it; strict comparisons keep the earlier row on ties.
// Positions are row offsets within the segment (I = int32 unless a segment is longer), so the
// float compare and the position select share lane widths.
template <bool kMax, typename T, typename A, typename I>
inline void extremum_row(const T* q, int64_t w, I pos, A* acc, I* best) {
  for (int64_t c = 0; c < w; ++c) {
    const A v = A(q[c]), b = acc[c];
    const bool take = (b == b) & ((v != v) | (kMax ? v > b : v < b));  // bitwise: vectorises
    acc[c] = take ? v : b;
    best[c] = take ? pos : best[c];
  }
}

// Values only (no argument wanted): the same selection without the position lanes.
template <bool kMax, typename T, typename A>
inline void extremum_value_row(const T* q, int64_t w, A* acc) {
  for (int64_t c = 0; c < w; ++c) {
    const A v = A(q[c]), b = acc[c];
    const bool take = (b == b) & ((v != v) | (kMax ? v > b : v < b));
    acc[c] = take ? v : b;
  }
}

template <typename T, typename A>
void extremum_value_segment(const T* src, int64_t C, int64_t c0, int64_t w, const int64_t* perm, int64_t lo,
                            int64_t hi, int64_t end, bool is_max, A* acc) {
  const T* p = src + (perm ? perm[lo] : lo) * C + c0;
  for (int64_t c = 0; c < w; ++c) acc[c] = A(p[c]);
  for (int64_t j = lo + 1; j < hi; ++j) {
    if (perm && j + kPrefetch < end) prefetch_row(src + perm[j + kPrefetch] * C + c0, w);
    const T* q = src + (perm ? perm[j] : j) * C + c0;
    if (is_max)
      extremum_value_row<true, T, A>(q, w, acc);
    else
      extremum_value_row<false, T, A>(q, w, acc);
  }
}

template <typename T, typename A, typename I>
void extremum_segment(const T* src, int64_t C, int64_t c0, int64_t w, const int64_t* perm, int64_t lo, int64_t hi,
                      int64_t end, bool is_max, A* acc, I* pos) {
  const T* p = src + (perm ? perm[lo] : lo) * C + c0;
  for (int64_t c = 0; c < w; ++c) acc[c] = A(p[c]), pos[c] = 0;
  for (int64_t j = lo + 1; j < hi; ++j) {
    if (perm && j + kPrefetch < end) prefetch_row(src + perm[j + kPrefetch] * C + c0, w);
    const T* q = src + (perm ? perm[j] : j) * C + c0;
    if (is_max)
      extremum_row<true, T, A, I>(q, w, (I)(j - lo), acc, pos);
    else
      extremum_row<false, T, A, I>(q, w, (I)(j - lo), acc, pos);
  }
}

template <typename T>
void segment_csr_kernel(const T* src, int64_t C, const int64_t* off, int64_t S, const int64_t* perm, int reduce,
                        int64_t correction, T* out, int64_t* arg, T* mean) {
  using A = at::opmath_type<T>;
  // Work units: (segment, channel block). Few segments => split the channels too.
  const int64_t threads = std::max(1, at::get_num_threads());
  const int64_t nb = S >= 8 * threads ? 1 : std::min<int64_t>(C, (8 * threads + S - 1) / std::max<int64_t>(S, 1));
  const int64_t cb = (C + nb - 1) / nb;
  const int64_t rows = off[S] - off[0], end = off[S];
  const int64_t grain = std::max<int64_t>(1, (int64_t)32768 / std::max<int64_t>(1, rows / std::max<int64_t>(S, 1) * cb));
  at::parallel_for(0, S * nb, grain, [&](int64_t u0, int64_t u1) {
    std::vector<A> acc((size_t)cb), acc2((size_t)cb), acc3((size_t)cb);
    std::vector<int64_t> best((size_t)cb);
    std::vector<int32_t> pos32((size_t)cb);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t s = u / nb, c0 = (u % nb) * cb, c1 = std::min(C, c0 + cb), w = c1 - c0;
      if (w <= 0) continue;
      const int64_t lo = off[s], hi = off[s + 1], cnt = hi - lo;
      T* o = out + s * C + c0;
      auto row_ptr = [&](int64_t j) { return src + (perm ? perm[j] : j) * C + c0; };
      if (reduce == POINTINS_REDUCE_MAX || reduce == POINTINS_REDUCE_MIN) {
        const bool is_max = reduce == POINTINS_REDUCE_MAX;
        if (arg == nullptr) {  // values only
          if (cnt == 0) {
            for (int64_t c = 0; c < w; ++c) o[c] = T(0);
            continue;
          }
          extremum_value_segment<T, A>(src, C, c0, w, perm, lo, hi, end, is_max, acc.data());
          for (int64_t c = 0; c < w; ++c) o[c] = T(acc[c]);
          continue;
        }
        int64_t* a = arg + s * C + c0;
        if (cnt == 0) {
          for (int64_t c = 0; c < w; ++c) o[c] = T(0), a[c] = -1;
          continue;
        }
        if (cnt <= INT32_MAX) {
          extremum_segment<T, A, int32_t>(src, C, c0, w, perm, lo, hi, end, is_max, acc.data(), pos32.data());
          for (int64_t c = 0; c < w; ++c) best[c] = pos32[c];
        } else {
          extremum_segment<T, A, int64_t>(src, C, c0, w, perm, lo, hi, end, is_max, acc.data(), best.data());
        }
        for (int64_t c = 0; c < w; ++c) {
          const int64_t j = lo + best[c];
          o[c] = T(acc[c]);
          a[c] = perm ? perm[j] : j;
        }
        continue;
      }
      // Two-level sum: blocks of POINTINS_SEGMENT_CHUNK rows, folded into the total in order
      // (float32 keeps its accuracy on long segments; the GPU merges the same chunks).
      std::fill(acc.begin(), acc.begin() + w, A(0));
      for (int64_t j0 = lo; j0 < hi; j0 += POINTINS_SEGMENT_CHUNK) {
        std::fill(acc2.begin(), acc2.begin() + w, A(0));
        for (int64_t j = j0, j1 = std::min(hi, j0 + POINTINS_SEGMENT_CHUNK); j < j1; ++j) {
          if (perm && j + kPrefetch < end) prefetch_row(src + perm[j + kPrefetch] * C + c0, w);
          const T* q = row_ptr(j);
          for (int64_t c = 0; c < w; ++c) acc2[c] += A(q[c]);
        }
        for (int64_t c = 0; c < w; ++c) acc[c] += acc2[c];
      }
      if (reduce == POINTINS_REDUCE_SUM) {
        for (int64_t c = 0; c < w; ++c) o[c] = T(acc[c]);
        continue;
      }
      const A inv = cnt > 0 ? A(1) / A(cnt) : A(0);
      for (int64_t c = 0; c < w; ++c) acc[c] *= inv;  // the mean
      if (reduce == POINTINS_REDUCE_MEAN) {
        for (int64_t c = 0; c < w; ++c) o[c] = T(acc[c]);
        continue;
      }
      // Variance: second pass over the (cached) rows, sum of squared deviations (two-level too).
      std::fill(acc2.begin(), acc2.begin() + w, A(0));
      for (int64_t j0 = lo; j0 < hi; j0 += POINTINS_SEGMENT_CHUNK) {
        std::fill(acc3.begin(), acc3.begin() + w, A(0));
        for (int64_t j = j0, j1 = std::min(hi, j0 + POINTINS_SEGMENT_CHUNK); j < j1; ++j) {
          const T* q = row_ptr(j);
          for (int64_t c = 0; c < w; ++c) {
            const A d = A(q[c]) - acc[c];
            acc3[c] += d * d;
          }
        }
        for (int64_t c = 0; c < w; ++c) acc2[c] += acc3[c];
      }
      const A div = cnt > correction ? A(1) / A(cnt - correction) : A(0);
      T* m = mean + s * C + c0;
      for (int64_t c = 0; c < w; ++c) o[c] = T(acc2[c] * div), m[c] = T(acc[c]);
    }
  });
}



std::tuple<at::Tensor, at::Tensor> segment_csr_cpu(const at::Tensor& src_in, const at::Tensor& offsets_in,
                                                   const c10::optional<at::Tensor>& perm_in, c10::string_view reduce_name,
                                                   int64_t correction, bool with_arg) {
  const int reduce = check_segment_csr_args(src_in, offsets_in, perm_in, reduce_name, correction);
  check_cpu(src_in, "src", "segment_reduce");
  auto src = src_in.contiguous();
  auto offsets = offsets_in.contiguous();
  at::Tensor perm = perm_in.has_value() ? perm_in->contiguous() : at::Tensor();
  const int64_t n = src.size(0), C = src.size(1), S = offsets.numel() - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  bool ok = off[0] == 0 && off[S] <= n && (perm.defined() || off[S] == n);
  for (int64_t s = 0; ok && s < S; ++s) ok = off[s + 1] >= off[s];
  if (!ok) raise_segment_offsets_error(offsets, n, perm.defined());
  if (perm.defined() && off[S] > 0) {
    auto used = perm.slice(0, 0, off[S]);
    TORCH_CHECK_VALUE(used.min().item<int64_t>() >= 0 && used.max().item<int64_t>() < n,
                      "pointins.segment_reduce: perm has entries outside [0, ", n, ").");
  }
  auto out = at::empty({S, C}, src.options());
  at::Tensor aux = segment_aux(reduce, S, src, with_arg);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "segment_csr_cpu", [&] {
    segment_csr_kernel<scalar_t>(src.data_ptr<scalar_t>(), C, off, S, perm.defined() ? perm.data_ptr<int64_t>() : nullptr,
                                 reduce, correction, out.data_ptr<scalar_t>(),
                                 aux.scalar_type() == at::kLong ? aux.data_ptr<int64_t>() : nullptr,
                                 reduce == POINTINS_REDUCE_VAR ? aux.data_ptr<scalar_t>() : nullptr);
  });
  return {out, aux};
}


// Reduction by segment ids: stable counting sort, then the CSR reduction through the
// permutation (rows prefetched ahead), so every output sees its rows in index order.
std::tuple<at::Tensor, at::Tensor> segment_coo_cpu(const at::Tensor& src, const at::Tensor& index,
                                                   int64_t num_segments, c10::string_view reduce, int64_t correction,
                                                   bool with_arg) {
  check_segment_coo_args(src, index, num_segments);
  auto [perm, offsets] = segment_index_csr_cpu(index, num_segments);
  return segment_csr_cpu(src, offsets, perm, reduce, correction, with_arg);
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("segment_index_csr", &segment_index_csr_cpu);
  m.impl("segment_csr", &segment_csr_cpu);
  m.impl("segment_coo", &segment_coo_cpu);
}

}  // namespace pointins

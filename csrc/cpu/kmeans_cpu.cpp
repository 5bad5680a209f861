// CPU ragged batched K-means steps: initialisation (k-means++ / random), assignment (+ optional
// per-cluster accumulation) and the centroid update with empty-cluster relocation and the
// convergence test. The Lloyd loop itself is in pointins/ops/cluster.py. Every step is
// deterministic for any thread count (sets or fixed point chunks are the units of work, and
// sums run in point order).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/kmeans.h"

namespace pointins {
namespace {

constexpr int64_t kChunk = 2048;  // points per assignment work unit
constexpr int64_t kDirectDims = 8;  // up to this D, distances are summed directly (no dot-product form)

struct Sets {
  const int64_t* off;
  const int64_t* coff;
  int64_t B;
  int64_t n(int64_t b) const { return off[b + 1] - off[b]; }
  int64_t k(int64_t b) const { return coff[b + 1] - coff[b]; }
};

template <typename T>
inline double sqdist(const T* a, const T* b, int64_t D) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double t = (double)a[d] - (double)b[d];
    s += t * t;
  }
  return s;
}

// ---- initialisation ----------------------------------------------------------------------------

constexpr int64_t kTransposeBytes = (int64_t)256 << 20;  // largest set copied transposed for the vector path

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POINTINS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// No FMA contraction: each term is rounded as in sqdist (a multiply, then an add), so the sums are bitwise equal.
#define POINTINS_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define POINTINS_CLONES
#define POINTINS_NO_CONTRACT
#endif

// out[i] = sum_d ((double)xt[d * ld + i] - c[d])^2 for i < m, d ascending: sqdist of m points stored as
// columns of a transposed block, vectorised across points.
template <typename T>
inline __attribute__((always_inline)) void sqdist_cols_impl(const T* xt, int64_t ld, int64_t m, int64_t D, const T* c,
                                                            double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double cd = (double)c[d];
    const T* row = xt + d * ld;
    for (int64_t i = 0; i < m; ++i) {
      const double t = (double)row[i] - cd;
      out[i] += t * t;
    }
  }
}
POINTINS_CLONES POINTINS_NO_CONTRACT void sqdist_cols_f32(const float* xt, int64_t ld, int64_t m, int64_t D,
                                                          const float* c, double* out) {
  sqdist_cols_impl<float>(xt, ld, m, D, c, out);
}
POINTINS_CLONES POINTINS_NO_CONTRACT void sqdist_cols_f64(const double* xt, int64_t ld, int64_t m, int64_t D,
                                                          const double* c, double* out) {
  sqdist_cols_impl<double>(xt, ld, m, D, c, out);
}
inline void sqdist_cols(const float* xt, int64_t ld, int64_t m, int64_t D, const float* c, double* out) {
  sqdist_cols_f32(xt, ld, m, D, c, out);
}
inline void sqdist_cols(const double* xt, int64_t ld, int64_t m, int64_t D, const double* c, double* out) {
  sqdist_cols_f64(xt, ld, m, D, c, out);
}

template <typename T>
void init_set(const T* x, int64_t n, int64_t D, int64_t kb, int64_t set, uint64_t seed, int method, int64_t trials,
              T* cen) {
  if (kb == 0) return;
  auto take = [&](int64_t j, int64_t i) { std::copy(x + i * D, x + (i + 1) * D, cen + j * D); };
  if (method == POINTINS_KMEANS_RANDOM) {  // Floyd's sampling of kb distinct points
    std::vector<int64_t> chosen;
    chosen.reserve(kb);
    int64_t draw = 0;
    for (int64_t j = n - kb; j < n; ++j) {
      int64_t t = (int64_t)(kmeans_uniform(seed, set, draw++) * (double)(j + 1));
      t = std::min(t, j);
      chosen.push_back(std::find(chosen.begin(), chosen.end(), t) == chosen.end() ? t : j);
    }
    for (int64_t j = 0; j < kb; ++j) take(j, chosen[j]);
    return;
  }
  // Greedy k-means++ (pointins/kmeans.h): L candidates by D^2 sampling per centre, the one with the lowest
  // potential kept. Work is split into fixed point chunks and the partial sums added in chunk order, so the
  // result does not depend on the thread count. Distances go through a transposed copy of the set (D x n) so
  // they vectorise across points while each point still sums its D terms in order, in double: bitwise what the
  // row-wise sqdist gives (sqdist_cols compiles without FMA contraction). Sets too large for a copy
  // (> kTransposeBytes) use sqdist row by row.
  const int64_t L = kmeans_local_trials(trials, kb);
  int64_t first = std::min<int64_t>(n - 1, (int64_t)(kmeans_uniform(seed, set, 0) * (double)n));
  take(0, first);
  const bool cols = n * D * (int64_t)sizeof(T) <= kTransposeBytes;
  std::vector<T> xt(cols ? n * D : 0);
  if (cols) {
    at::parallel_for(0, n, 1024, [&](int64_t i0, int64_t i1) {
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = i0; i < i1; ++i) xt[d * n + i] = x[i * D + d];
    });
  }
  // dist(i0, i1, c, out): out[i - i0] = |x_i - c|^2 in double for i in [i0, i1)
  auto dist = [&](int64_t i0, int64_t i1, const T* c, double* out) {
    if (cols) {
      sqdist_cols(xt.data() + i0, n, i1 - i0, D, c, out);
    } else {
      for (int64_t i = i0; i < i1; ++i) out[i - i0] = sqdist(x + i * D, c, D);
    }
  };
  std::vector<double> d2(n);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) dist(c * kChunk, std::min(n, (c + 1) * kChunk), cen, d2.data() + c * kChunk);
  });
  std::vector<double> part(chunks * L);
  std::vector<int64_t> cand(L);
  std::vector<double> target(L);
  for (int64_t r = 1; r < kb; ++r) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += d2[i];
    for (int64_t t = 0; t < L; ++t) {
      const double u = kmeans_uniform(seed, set, 1 + (r - 1) * L + t);
      if (total > 0) {
        target[t] = u * total;
        cand[t] = -1;
      } else {
        target[t] = -1;  // every point coincides with a centre
        cand[t] = std::min<int64_t>(n - 1, (int64_t)(u * (double)n));
      }
    }
    if (total > 0) {  // one pass finds every candidate: first positive entry whose prefix sum exceeds its target
      double acc = 0;
      int64_t last = -1, open = L;
      for (int64_t i = 0; i < n && open > 0; ++i) {
        acc += d2[i];
        if (d2[i] <= 0) continue;
        last = i;
        for (int64_t t = 0; t < L; ++t)
          if (cand[t] < 0 && acc > target[t]) {
            cand[t] = i;
            --open;
          }
      }
      for (int64_t t = 0; t < L; ++t)
        if (cand[t] < 0) cand[t] = last;  // rounding at the very end
    }
    int64_t best = 0;
    if (L > 1) {
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        std::vector<double> v(kChunk);
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
          for (int64_t t = 0; t < L; ++t) {
            dist(i0, i1, x + cand[t] * D, v.data());
            double s = 0;
            for (int64_t i = i0; i < i1; ++i) s += std::min(d2[i], v[i - i0]);
            part[c * L + t] = s;
          }
        }
      });
      double best_pot = 0;
      for (int64_t t = 0; t < L; ++t) {
        double pot = 0;
        for (int64_t c = 0; c < chunks; ++c) pot += part[c * L + t];
        if (t == 0 || pot < best_pot) {
          best_pot = pot;
          best = t;
        }
      }
    }
    take(r, cand[best]);
    const T* c = cen + r * D;
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> v(kChunk);
      for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t i0 = ch * kChunk, i1 = std::min(n, i0 + kChunk);
        dist(i0, i1, c, v.data());
        for (int64_t i = i0; i < i1; ++i) d2[i] = std::min(d2[i], v[i - i0]);
      }
    });
  }
}

at::Tensor kmeans_init_cpu(const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, int64_t method,
                           int64_t seed, int64_t local_trials) {
  check_kmeans_args(x_in, offsets, coff, "kmeans");
  check_cpu(x_in, "x", "kmeans");
  TORCH_CHECK_VALUE(method == POINTINS_KMEANS_PLUSPLUS || method == POINTINS_KMEANS_RANDOM,
                    "pointins.kmeans: unknown init method ", method, ".");
  TORCH_CHECK_VALUE(local_trials >= 0 && local_trials <= 1024, "pointins.kmeans: local_trials must be in [0, 1024] ",
                    "(0: 2 + floor(ln k)), got ", local_trials, ".");
  auto x = x_in.contiguous();
  auto off = offsets.contiguous(), co = coff.contiguous();
  const Sets sets{off.data_ptr<int64_t>(), co.data_ptr<int64_t>(), off.numel() - 1};
  check_kmeans_sets(sets.off, sets.coff, sets.B, x.size(0), "kmeans");
  const int64_t D = x.size(1);
  auto cen = at::empty({sets.coff[sets.B], D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kmeans_init_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* cp = cen.data_ptr<scalar_t>();
    at::parallel_for(0, sets.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        init_set<scalar_t>(xp + sets.off[b] * D, sets.n(b), D, sets.k(b), b, (uint64_t)seed, (int)method,
                           local_trials, cp + sets.coff[b] * D);
    });
  });
  return cen;
}

// ---- assignment --------------------------------------------------------------------------------

// Squared distances of m points to kb centroids, dist[p * kb + j], with the centroids
// transposed (ct: D x kb) so the inner loop runs over centroids and vectorises. Compiled for
// AVX-512, AVX2 and baseline x86-64 (chosen at load time: the extension has no -march flags).
template <typename T>
inline __attribute__((always_inline)) void direct_impl(const T* x, int64_t m, int64_t D, const T* ct, int64_t kb,
                                                        T* dist) {
  for (int64_t p = 0; p < m; ++p) {
    T* o = dist + p * kb;
    for (int64_t j = 0; j < kb; ++j) o[j] = T(0);
    for (int64_t d = 0; d < D; ++d) {
      const T a = x[p * D + d];
      const T* c = ct + d * kb;
      for (int64_t j = 0; j < kb; ++j) {
        const T t = a - c[j];
        o[j] += t * t;
      }
    }
  }
}

POINTINS_CLONES void direct_f32(const float* x, int64_t m, int64_t D, const float* ct, int64_t kb, float* o) {
  direct_impl<float>(x, m, D, ct, kb, o);
}
POINTINS_CLONES void direct_f64(const double* x, int64_t m, int64_t D, const double* ct, int64_t kb, double* o) {
  direct_impl<double>(x, m, D, ct, kb, o);
}
inline void direct(const float* x, int64_t m, int64_t D, const float* ct, int64_t kb, float* o) {
  direct_f32(x, m, D, ct, kb, o);
}
inline void direct(const double* x, int64_t m, int64_t D, const double* ct, int64_t kb, double* o) {
  direct_f64(x, m, D, ct, kb, o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_assign_cpu(
    const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, const at::Tensor& cen_in,
    const c10::optional<at::Tensor>& converged_in, bool accumulate, c10::optional<int64_t> /*max_k: CUDA only*/) {
  check_kmeans_args(x_in, offsets, coff, "kmeans");
  check_kmeans_centroids(x_in, cen_in, coff, converged_in, "kmeans");
  check_cpu(x_in, "x", "kmeans");
  auto x = x_in.contiguous(), cen = cen_in.contiguous();
  auto off = offsets.contiguous(), co = coff.contiguous();
  const Sets sets{off.data_ptr<int64_t>(), co.data_ptr<int64_t>(), off.numel() - 1};
  check_kmeans_sets(sets.off, sets.coff, sets.B, x.size(0), "kmeans");
  const int64_t n = x.size(0), D = x.size(1), K = cen.size(0);
  const uint8_t* conv = nullptr;
  at::Tensor conv_t;
  if (converged_in.has_value()) {
    conv_t = converged_in->to(at::kByte).contiguous();
    conv = conv_t.data_ptr<uint8_t>();
  }
  auto labels = at::full({n}, -1, off.options());
  auto dist = at::zeros({n}, x.options());
  auto sums = at::zeros({accumulate ? K : 0, D}, x.options());
  auto counts = at::zeros({accumulate ? K : 0}, off.options());
  // Work units: chunks of kChunk points of one active set with k_b > 0.
  std::vector<std::array<int64_t, 3>> units;
  for (int64_t b = 0; b < sets.B; ++b) {
    if (sets.k(b) == 0 || (conv && conv[b])) continue;
    for (int64_t s = sets.off[b]; s < sets.off[b + 1]; s += kChunk)
      units.push_back({b, s, std::min(sets.off[b + 1], s + kChunk)});
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kmeans_assign_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* cp = cen.data_ptr<T>();
    int64_t* lp = labels.data_ptr<int64_t>();
    T* dp = dist.data_ptr<T>();
    // Per set: transposed centroids (direct form, D <= kDirectDims) or squared norms (dot form:
    // |c|^2 - 2 x.c through a single-threaded BLAS GEMM per chunk, as scikit-learn does).
    std::vector<T> ct((size_t)K * D), cn((size_t)K);
    for (int64_t b = 0; b < sets.B; ++b) {
      const int64_t c0 = sets.coff[b], kb = sets.k(b);
      for (int64_t j = 0; j < kb; ++j) {
        T sq = 0;
        for (int64_t d = 0; d < D; ++d) {
          const T v = cp[(c0 + j) * D + d];
          ct[c0 * D + d * kb + j] = v;
          sq += v * v;
        }
        cn[c0 + j] = sq;
      }
    }
    // Fused accumulation: each unit sums its points per cluster (x's dtype, point order; at most
    // kChunk points) into its own partial; the partials of a set are then added in double, in unit
    // order (deterministic).
    std::vector<int64_t> part_off(units.size() + 1, 0);
    for (size_t u = 0; u < units.size(); ++u) part_off[u + 1] = part_off[u] + (accumulate ? sets.k(units[u][0]) : 0);
    std::vector<T> part_sum((size_t)part_off.back() * D);
    std::vector<int64_t> part_cnt((size_t)part_off.back());
    at::parallel_for(0, (int64_t)units.size(), 1, [&](int64_t u0, int64_t u1) {
      at::Tensor buf_t;
      std::vector<T> buf;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = units[u][0], lo = units[u][1], hi = units[u][2];
        const int64_t c0 = sets.coff[b], kb = sets.k(b), m = hi - lo;
        const T* scores;
        if (D <= kDirectDims) {
          buf.resize(m * kb);
          direct(xp + lo * D, m, D, ct.data() + c0 * D, kb, buf.data());
          scores = buf.data();
        } else {
          auto xs = at::from_blob(const_cast<T*>(xp + lo * D), {m, D}, x.options());
          auto cs = cen.slice(0, c0, c0 + kb);
          buf_t = at::mm(xs, cs.t());  // (m, kb) dots
          scores = buf_t.template data_ptr<T>();
        }
        for (int64_t p = 0; p < m; ++p) {
          const T* row = scores + p * kb;
          T best = 0;
          int64_t arg = 0;
          if (D <= kDirectDims) {
            best = row[0];
            for (int64_t j = 1; j < kb; ++j) {  // branchless: the minimum moves unpredictably
              const bool lt = row[j] < best;
              best = lt ? row[j] : best;
              arg = lt ? j : arg;
            }
            lp[lo + p] = arg;
            dp[lo + p] = best;
          } else {
            best = cn[c0] - 2 * row[0];
            for (int64_t j = 1; j < kb; ++j) {
              const T sc = cn[c0 + j] - 2 * row[j];
              const bool lt = sc < best;
              best = lt ? sc : best;
              arg = lt ? j : arg;
            }
            const T* xi = xp + (lo + p) * D;
            T xn = 0;
            for (int64_t d = 0; d < D; ++d) xn += xi[d] * xi[d];
            lp[lo + p] = arg;
            dp[lo + p] = std::max(T(0), xn + best);
          }
        }
        if (accumulate) {
          T* ps = part_sum.data() + part_off[u] * D;
          int64_t* pc = part_cnt.data() + part_off[u];
          for (int64_t i = lo; i < hi; ++i) {
            const int64_t j = lp[i];
            const T* xi = xp + i * D;
            T* o = ps + j * D;
            for (int64_t d = 0; d < D; ++d) o[d] += xi[d];
            ++pc[j];
          }
        }
      }
    });
    if (accumulate) {
      T* sp = sums.data_ptr<T>();
      int64_t* np_ = counts.data_ptr<int64_t>();
      std::vector<int64_t> first_unit(sets.B + 1, (int64_t)units.size());
      for (int64_t u = (int64_t)units.size() - 1; u >= 0; --u) first_unit[units[u][0]] = u;
      at::parallel_for(0, sets.B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<double> acc;
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t c0 = sets.coff[b], kb = sets.k(b);
          if (kb == 0 || (conv && conv[b])) continue;
          acc.assign(kb * D, 0.0);
          for (int64_t u = first_unit[b]; u < (int64_t)units.size() && units[u][0] == b; ++u) {
            const T* ps = part_sum.data() + part_off[u] * D;
            for (int64_t t = 0; t < kb * D; ++t) acc[t] += (double)ps[t];
            for (int64_t j = 0; j < kb; ++j) np_[c0 + j] += part_cnt[part_off[u] + j];
          }
          for (int64_t t = 0; t < kb * D; ++t) sp[c0 * D + t] = (T)acc[t];
        }
      });
    }
  });
  return {labels, dist, sums, counts};
}

// ---- update ------------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> kmeans_update_cpu(
    const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, const at::Tensor& labels_in,
    const at::Tensor& dist_in, const at::Tensor& sums_in, const at::Tensor& counts_in, const at::Tensor& cen_in,
    const c10::optional<at::Tensor>& tol_in, const at::Tensor& converged_in, const at::Tensor& n_iter_in,
    bool spherical) {
  check_kmeans_update_args(x_in, offsets, coff, cen_in, sums_in, counts_in, converged_in);
  check_cpu(x_in, "x", "kmeans");
  auto x = x_in.contiguous(), cen_old = cen_in.contiguous(), labels = labels_in.contiguous(),
       dist = dist_in.contiguous();
  auto sums = sums_in.to(at::kDouble).contiguous();
  auto counts = counts_in.contiguous().clone();
  auto off = offsets.contiguous(), co = coff.contiguous();
  const Sets sets{off.data_ptr<int64_t>(), co.data_ptr<int64_t>(), off.numel() - 1};
  const int64_t D = x.size(1);
  auto cen = cen_old.clone();
  auto converged = converged_in.to(at::kBool).clone();
  auto n_iter = n_iter_in.clone();
  at::Tensor tol;
  if (tol_in.has_value()) tol = tol_in->to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kmeans_update_cpu", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* dp = dist.data_ptr<T>();
    const int64_t* lp = labels.data_ptr<int64_t>();
    double* sp = sums.data_ptr<double>();
    int64_t* np_ = counts.data_ptr<int64_t>();
    T* cp = cen.data_ptr<T>();
    bool* cv = converged.data_ptr<bool>();
    int64_t* it = n_iter.data_ptr<int64_t>();
    at::parallel_for(0, sets.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = sets.coff[b], kb = sets.k(b), lo = sets.off[b], nb = sets.n(b);
        if (kb == 0 || cv[b]) continue;
        // Empty clusters take the points farthest from their centres (descending distance,
        // lowest index on ties); each moved point leaves its old cluster's sum.
        std::vector<int64_t> empty;
        for (int64_t j = 0; j < kb; ++j)
          if (np_[c0 + j] == 0) empty.push_back(j);
        if (!empty.empty()) {
          const int64_t e = std::min<int64_t>((int64_t)empty.size(), nb);
          std::vector<int64_t> order(nb);
          std::iota(order.begin(), order.end(), lo);
          std::partial_sort(order.begin(), order.begin() + e, order.end(), [&](int64_t a, int64_t c) {
            return dp[a] > dp[c] || (dp[a] == dp[c] && a < c);
          });
          for (int64_t r = 0; r < e; ++r) {
            const int64_t i = order[r], nj = c0 + empty[r], oj = c0 + lp[i];
            for (int64_t d = 0; d < D; ++d) {
              sp[oj * D + d] -= (double)xp[i * D + d];
              sp[nj * D + d] = (double)xp[i * D + d];
            }
            --np_[oj];
            np_[nj] = 1;
          }
        }
        double shift = 0;
        for (int64_t j = c0; j < c0 + kb; ++j) {
          if (np_[j] <= 0) continue;  // keeps its old centre
          double norm = 0;
          std::vector<double> c(D);
          for (int64_t d = 0; d < D; ++d) {
            c[d] = sp[j * D + d] / (double)np_[j];
            norm += c[d] * c[d];
          }
          const double len = spherical ? std::sqrt(norm) : 1.0;  // unit length: c / sqrt(sum c_d^2)
          if (spherical && norm == 0) continue;
          for (int64_t d = 0; d < D; ++d) {
            const T v = (T)(c[d] / len);
            const double t = (double)v - (double)cp[j * D + d];
            shift += t * t;
            cp[j * D + d] = v;
          }
        }
        ++it[b];
        if (tol.defined() && shift <= tol.data_ptr<double>()[b]) cv[b] = true;
      }
    });
  });
  return {cen, converged, n_iter};
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("kmeans_init", &kmeans_init_cpu);
  m.impl("kmeans_assign", &kmeans_assign_cpu);
  m.impl("kmeans_update", &kmeans_update_cpu);
}

}  // namespace pointins

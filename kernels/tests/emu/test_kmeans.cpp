// Emulated kernels/kmeans.cu: k-means++ / random initialisation (block scans and reductions), the
// fused assignment + accumulation (shared-memory and global atomics paths) and the update (empty
// cluster relocation, means, convergence), alone and as a whole Lloyd loop, against a serial
// reference. Integer-valued points keep every sum exact, so even float-atomic results are compared
// bitwise; real-valued points are compared with tolerances.
#include <algorithm>
#include <cmath>

#include "emu_test.h"
#include "pointins/kmeans.h"
#include "pointins/pointins_kernels.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

struct Sets {
  std::vector<int64_t> off, coff;
  int64_t n = 0, K = 0, max_k = 0;
};

Sets make_sets(const std::vector<int64_t>& sizes, const std::vector<int64_t>& ks) {
  Sets s;
  s.off = emu_test::csr(sizes);
  std::vector<int64_t> kb(sizes.size());
  for (size_t b = 0; b < sizes.size(); ++b) kb[b] = std::min(ks[b], sizes[b]), s.max_k = std::max(s.max_k, kb[b]);
  s.coff = emu_test::csr(kb);
  s.n = s.off.back();
  s.K = s.coff.back();
  return s;
}

template <typename T>
double sqdist(const T* a, const T* b, int64_t D) {
  double s = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double t = (double)a[d] - (double)b[d];
    s += t * t;
  }
  return s;
}

// ---- serial reference of the three steps ----------------------------------------------------------

template <typename T>
std::vector<T> ref_init(const std::vector<T>& x, int64_t D, const Sets& s, uint64_t seed, int method,
                        int64_t trials = 0) {
  std::vector<T> cen(s.K * D);
  const int64_t B = (int64_t)s.off.size() - 1;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lo = s.off[b], n = s.off[b + 1] - lo, c0 = s.coff[b], kb = s.coff[b + 1] - c0;
    if (kb == 0 || n == 0) continue;
    const T* xs = x.data() + lo * D;
    T* cs = cen.data() + c0 * D;
    if (method == POINTINS_KMEANS_RANDOM) {
      std::vector<int64_t> chosen;
      int64_t draw = 0;
      for (int64_t j = n - kb; j < n; ++j) {
        int64_t t = (int64_t)(pointins::kmeans_uniform(seed, b, draw++) * (double)(j + 1));
        if (t > j) t = j;
        chosen.push_back(std::find(chosen.begin(), chosen.end(), t) != chosen.end() ? j : t);
      }
      for (int64_t r = 0; r < kb; ++r) std::copy(xs + chosen[r] * D, xs + chosen[r] * D + D, cs + r * D);
      continue;
    }
    int64_t first = (int64_t)(pointins::kmeans_uniform(seed, b, 0) * (double)n);
    if (first > n - 1) first = n - 1;
    std::copy(xs + first * D, xs + first * D + D, cs);
    std::vector<double> d2(n);
    for (int64_t i = 0; i < n; ++i) d2[i] = sqdist(xs + i * D, cs, D);
    const int64_t L = pointins::kmeans_local_trials(trials, kb);
    for (int64_t r = 1; r < kb; ++r) {
      double total = 0;
      for (double v : d2) total += v;
      int64_t best = -1;
      double best_pot = 0;
      for (int64_t t = 0; t < L; ++t) {  // greedy: L candidates by D^2 sampling, lowest potential kept
        const double u = pointins::kmeans_uniform(seed, b, 1 + (r - 1) * L + t);
        int64_t pick = -1;
        if (total > 0) {
          double prefix = 0;
          int64_t last = -1;
          for (int64_t i = 0; i < n; ++i) {
            prefix += d2[i];
            if (d2[i] > 0) last = i;
            if (d2[i] > 0 && prefix > u * total) {
              pick = i;
              break;
            }
          }
          if (pick < 0) pick = last;
        } else {
          pick = std::min<int64_t>((int64_t)(u * (double)n), n - 1);
        }
        double pot = 0;
        for (int64_t i = 0; i < n; ++i) pot += std::min(d2[i], sqdist(xs + i * D, xs + pick * D, D));
        if (best < 0 || pot < best_pot) {
          best = pick;
          best_pot = pot;
        }
      }
      std::copy(xs + best * D, xs + best * D + D, cs + r * D);
      for (int64_t i = 0; i < n; ++i) d2[i] = std::min(d2[i], sqdist(xs + i * D, cs + r * D, D));
    }
  }
  return cen;
}

template <typename T>
void ref_assign(const std::vector<T>& x, int64_t D, const Sets& s, const std::vector<T>& cen,
                const std::vector<uint8_t>* conv, bool accumulate, std::vector<int64_t>& labels, std::vector<T>& dist,
                std::vector<T>& sums, std::vector<int64_t>& counts) {
  labels.assign(s.n, -1);
  dist.assign(s.n, T(0));
  if (accumulate) sums.assign(s.K * D, T(0)), counts.assign(s.K, 0);
  const int64_t B = (int64_t)s.off.size() - 1;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t c0 = s.coff[b], kb = s.coff[b + 1] - c0;
    if ((conv && (*conv)[b]) || kb == 0) continue;
    for (int64_t i = s.off[b]; i < s.off[b + 1]; ++i) {
      T best = T(0);
      int64_t arg = 0;
      for (int64_t j = 0; j < kb; ++j) {
        T acc = T(0);
        for (int64_t d = 0; d < D; ++d) {
          const T t = x[i * D + d] - cen[(c0 + j) * D + d];
          acc += t * t;
        }
        if (j == 0 || acc < best) best = acc, arg = j;
      }
      labels[i] = arg;
      dist[i] = best;
      if (accumulate) {
        for (int64_t d = 0; d < D; ++d) sums[(c0 + arg) * D + d] += x[i * D + d];
        ++counts[c0 + arg];
      }
    }
  }
}

template <typename T>
void ref_update(const std::vector<T>& x, int64_t D, const Sets& s, const std::vector<int64_t>& labels,
                std::vector<T>& dist, std::vector<T>& sums, std::vector<int64_t>& counts, std::vector<T>& cen,
                const std::vector<double>* tol, std::vector<uint8_t>& conv, std::vector<int64_t>& n_iter,
                bool spherical) {
  const int64_t B = (int64_t)s.off.size() - 1;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t lo = s.off[b], hi = s.off[b + 1], c0 = s.coff[b], kb = s.coff[b + 1] - c0;
    if (kb == 0 || conv[b]) continue;
    for (int64_t j = 0; j < kb; ++j) {
      if (counts[c0 + j] != 0) continue;
      double bv = -1.0;
      int64_t bi = -1;
      for (int64_t i = lo; i < hi; ++i)
        if ((double)dist[i] > bv) bv = (double)dist[i], bi = i;
      if (bi < 0) break;
      const int64_t old = c0 + labels[bi];
      for (int64_t d = 0; d < D; ++d) {
        sums[old * D + d] -= x[bi * D + d];
        sums[(c0 + j) * D + d] = x[bi * D + d];
      }
      counts[old] = counts[old] > 1 ? counts[old] - 1 : -1;
      counts[c0 + j] = 1;
      dist[bi] = T(-1);
    }
    double shift = 0;
    for (int64_t j = c0; j < c0 + kb; ++j) {
      const int64_t cnt = counts[j];
      if (cnt <= 0) continue;
      double norm = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double v = (double)sums[j * D + d] / (double)cnt;
        norm += v * v;
      }
      if (spherical && norm == 0) continue;
      const double len = spherical ? std::sqrt(norm) : 1.0;
      for (int64_t d = 0; d < D; ++d) {
        const T v = (T)((double)sums[j * D + d] / (double)cnt / len);
        const double t = (double)v - (double)cen[j * D + d];
        shift += t * t;
        cen[j * D + d] = v;
      }
    }
    n_iter[b] += 1;
    if (tol && shift <= (*tol)[b]) conv[b] = 1;
  }
}

template <typename T>
int dtype_code() {
  return sizeof(T) == 4 ? POINTINS_F32 : POINTINS_F64;
}

// Integer-valued blobs: every sum, distance and prefix sum is exact in float and double.
template <typename T>
std::vector<T> integer_points(std::mt19937_64& rng, int64_t n, int64_t D, int centres) {
  std::vector<T> x(n * D);
  std::vector<int> c(centres * D);
  for (auto& v : c) v = (int)(rng() % 200) - 100;
  for (int64_t i = 0; i < n; ++i) {
    const int k = (int)(rng() % (uint64_t)centres);
    for (int64_t d = 0; d < D; ++d) x[i * D + d] = (T)(c[k * D + d] + (int)(rng() % 9) - 4);
  }
  return x;
}

template <typename T>
void lloyd_case(const char* what, const std::vector<T>& x, int64_t D, const Sets& s, int method, bool spherical,
                int iters, bool with_tol, bool exact, int64_t trials = 0) {
  const int64_t B = (int64_t)s.off.size() - 1;
  std::vector<double> tol(B);
  for (int64_t b = 0; b < B; ++b) tol[b] = b % 3 == 0 ? 0.0 : 1e-3 * (double)(b + 1);
  // Reference loop.
  std::vector<T> rcen = ref_init(x, D, s, 77, method, trials);
  const std::vector<T> rcen0 = rcen;
  std::vector<uint8_t> rconv(B, 0);
  std::vector<int64_t> rn(B, 0), rlab, rcnt;
  std::vector<T> rdist, rsums;
  for (int it = 0; it < iters; ++it) {
    ref_assign(x, D, s, rcen, &rconv, true, rlab, rdist, rsums, rcnt);
    ref_update(x, D, s, rlab, rdist, rsums, rcnt, rcen, with_tol ? &tol : nullptr, rconv, rn, spherical);
  }
  ref_assign<T>(x, D, s, rcen, nullptr, false, rlab, rdist, rsums, rcnt);

  for_schedules(what, [&] {
    std::vector<T> cen(s.K * D, T(-5));
    std::vector<double> ws(std::max<int64_t>(s.n, 1));
    EOK(pointins_kmeans_init(dtype_code<T>(), x.data(), s.n, D, s.off.data(), s.coff.data(), B, 77, method, trials,
                             ws.data(), cen.data(), nullptr));
    ECHECK(cen == rcen0, "%s: initial centroids differ from the reference\n", what);
    std::vector<uint8_t> conv(B, 0);
    std::vector<int64_t> n_iter(B, 0), labels(s.n), counts(s.K);
    std::vector<T> dist(s.n), sums(s.K * D);
    for (int it = 0; it < iters; ++it) {
      std::fill(sums.begin(), sums.end(), T(0));
      std::fill(counts.begin(), counts.end(), 0);
      EOK(pointins_kmeans_assign(dtype_code<T>(), x.data(), s.n, D, s.off.data(), s.coff.data(), B, s.max_k, cen.data(),
                                 conv.data(), 1, labels.data(), dist.data(), sums.data(), counts.data(), nullptr));
      EOK(pointins_kmeans_update(dtype_code<T>(), x.data(), D, s.off.data(), s.coff.data(), B, labels.data(),
                                 dist.data(), sums.data(), counts.data(), cen.data(), with_tol ? tol.data() : nullptr,
                                 conv.data(), n_iter.data(), spherical ? 1 : 0, nullptr));
    }
    EOK(pointins_kmeans_assign(dtype_code<T>(), x.data(), s.n, D, s.off.data(), s.coff.data(), B, s.max_k, cen.data(),
                               nullptr, 0, labels.data(), dist.data(), nullptr, nullptr, nullptr));
    if (exact) {
      ECHECK(cen == rcen, "%s: centroids differ from the reference\n", what);
      ECHECK(labels == rlab && dist == rdist, "%s: labels / distances differ from the reference\n", what);
      ECHECK(conv == rconv && n_iter == rn, "%s: convergence differs from the reference\n", what);
    } else {
      double worst = 0, scale = 1;
      for (int64_t t = 0; t < s.K * D; ++t)
        worst = std::max(worst, std::fabs((double)cen[t] - (double)rcen[t])), scale = std::max(scale, std::fabs((double)rcen[t]));
      // Float atomics sum in schedule-dependent order: a point on a boundary may flip, so only
      // gross differences count here; the nearest-centroid check below is exact.
      ECHECK(worst <= 1e-2 * scale, "%s: centroids off by %g\n", what, worst);
      // Each label is a nearest centroid (up to rounding).
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = s.off[b]; i < s.off[b + 1] && s.coff[b + 1] > s.coff[b]; ++i) {
          double best = 1e300;
          for (int64_t j = s.coff[b]; j < s.coff[b + 1]; ++j) best = std::min(best, sqdist(&x[i * D], &cen[j * D], D));
          const double got = sqdist(&x[i * D], &cen[(s.coff[b] + labels[i]) * D], D);
          ECHECK(got <= best * (1 + 1e-5) + 1e-6, "%s: point %lld not at its nearest centroid\n", what, (long long)i);
        }
    }
    std::vector<uint8_t> bytes;
    if (exact) {
      append(bytes, cen);
      append(bytes, labels);
      append(bytes, conv);
      append(bytes, n_iter);
    }
    return bytes;
  });
}

template <typename T>
void family(const char* prefix, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 3; ++trial) {
    std::vector<int64_t> sizes = emu_test::random_sizes(rng, 2 + 2 * trial, 300);
    if (trial == 0) sizes[0] = 700;  // k-means++ scans more than one 512-point tile
    std::vector<int64_t> ks(sizes.size());
    for (auto& k : ks) k = 1 + (int64_t)(rng() % 8);
    if (trial == 1) ks[0] = 0;            // a set without centroids
    if (trial == 2) ks.back() = 1 << 20;  // k = n for the last set
    const int64_t D = 1 + (int64_t)(rng() % 6);
    const Sets s = make_sets(sizes, ks);
    const std::vector<T> x = integer_points<T>(rng, s.n, D, 5);
    std::string name = std::string(prefix) + " k-means++";
    lloyd_case<T>(name.c_str(), x, D, s, POINTINS_KMEANS_PLUSPLUS, false, 4, true, true);
    lloyd_case<T>((name + " single-draw").c_str(), x, D, s, POINTINS_KMEANS_PLUSPLUS, false, 2, false, true, 1);
    lloyd_case<T>((name + " 5 trials").c_str(), x, D, s, POINTINS_KMEANS_PLUSPLUS, false, 2, false, true, 5);
    name = std::string(prefix) + " random init";
    lloyd_case<T>(name.c_str(), x, D, s, POINTINS_KMEANS_RANDOM, false, 3, false, true);
  }
}

EMU_CASE(kmeans, lloyd_f32) { family<float>("f32", 31); }
EMU_CASE(kmeans, lloyd_f64) { family<double>("f64", 32); }

EMU_CASE(kmeans, global_accumulation_path) {
  // max_k * D too large for the 48 KiB staging: the assignment accumulates with global atomics.
  std::mt19937_64 rng(33);
  const int64_t D = 24;
  const Sets s = make_sets({400, 200}, {130, 130});
  ECHECK(s.max_k * D * 2 * 8 + s.max_k * 8 > 48 * 1024, "not the global path\n");
  const std::vector<double> x = integer_points<double>(rng, s.n, D, 40);
  lloyd_case<double>("global atomics f64", x, D, s, POINTINS_KMEANS_RANDOM, false, 2, false, true);
}

EMU_CASE(kmeans, real_valued_and_spherical) {
  std::mt19937_64 rng(34);
  std::normal_distribution<float> normal(0.f, 1.f);
  const Sets s = make_sets({600, 1, 33, 0, 260}, {6, 3, 33, 4, 5});
  const int64_t D = 3;
  std::vector<float> x(s.n * D);
  for (auto& v : x) v = normal(rng);
  lloyd_case<float>("real-valued", x, D, s, POINTINS_KMEANS_PLUSPLUS, false, 5, true, false);
  lloyd_case<float>("spherical", x, D, s, POINTINS_KMEANS_PLUSPLUS, true, 5, false, false);
}

EMU_CASE(kmeans, edge_cases) {
  std::mt19937_64 rng(35);
  // Every point identical (zero total distance: the k-means++ fallback), k = n.
  const Sets same = make_sets({50, 40}, {5, 40});
  std::vector<float> x(same.n * 2, 3.0f);
  lloyd_case<float>("identical points", x, 2, same, POINTINS_KMEANS_PLUSPLUS, false, 3, true, true);
  // Many sets of one point.
  const Sets ones = make_sets(std::vector<int64_t>(100, 1), std::vector<int64_t>(100, 2));
  const std::vector<double> xo = integer_points<double>(rng, ones.n, 2, 3);
  lloyd_case<double>("sets of one point", xo, 2, ones, POINTINS_KMEANS_PLUSPLUS, false, 2, true, true);
  // Empty clusters relocated: far more centroids than distinct points.
  const Sets dup = make_sets({64}, {10});
  std::vector<float> xd(64 * 2);
  for (int64_t i = 0; i < 64; ++i) xd[2 * i] = (float)(i % 3), xd[2 * i + 1] = 0.f;
  lloyd_case<float>("duplicate points, empty clusters", xd, 2, dup, POINTINS_KMEANS_RANDOM, false, 3, false, true);
  // Converged sets are skipped by assign (labels -1, dist 0) and update.
  for_schedules("converged sets", [&] {
    const Sets s = make_sets({100, 100}, {3, 3});
    const std::vector<float> xs = integer_points<float>(rng, 200, 2, 3);
    std::vector<float> cen(6 * 2, 1.f), dist(200), sums(12);
    std::vector<int64_t> labels(200), counts(6), n_iter(2, 0);
    std::vector<uint8_t> conv = {1, 0};
    EOK(pointins_kmeans_assign(POINTINS_F32, xs.data(), 200, 2, s.off.data(), s.coff.data(), 2, 3, cen.data(),
                               conv.data(), 1, labels.data(), dist.data(), sums.data(), counts.data(), nullptr));
    bool skipped = true;
    for (int64_t i = 0; i < 100; ++i) skipped = skipped && labels[i] == -1 && dist[i] == 0.f;
    ECHECK(skipped && counts[0] + counts[1] + counts[2] == 0 && counts[3] + counts[4] + counts[5] == 100,
           "converged set not skipped by assign\n");
    const std::vector<float> before = cen;
    EOK(pointins_kmeans_update(POINTINS_F32, xs.data(), 2, s.off.data(), s.coff.data(), 2, labels.data(), dist.data(),
                               sums.data(), counts.data(), cen.data(), nullptr, conv.data(), n_iter.data(), 0, nullptr));
    ECHECK(n_iter[0] == 0 && n_iter[1] == 1 && std::equal(before.begin(), before.begin() + 6, cen.begin()),
           "converged set not skipped by update\n");
    return std::vector<uint8_t>();
  });
  ECHECK(pointins_kmeans_assign(POINTINS_F16, nullptr, 0, 1, nullptr, nullptr, 0, 0, nullptr, nullptr, 0, nullptr,
                                nullptr, nullptr, nullptr, nullptr) == cudaErrorInvalidValue,
         "f16 assignment accepted\n");
  ECHECK(pointins_kmeans_update(POINTINS_BF16, nullptr, 1, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr,
                                nullptr, nullptr, nullptr, nullptr, 0, nullptr) == cudaErrorInvalidValue,
         "bf16 update accepted\n");
  ECHECK(pointins_kmeans_init(POINTINS_F16, nullptr, 0, 1, nullptr, nullptr, 0, 0, 0, 0, nullptr, nullptr, nullptr) ==
             cudaErrorInvalidValue,
         "f16 K-means accepted\n");
}

}  // namespace

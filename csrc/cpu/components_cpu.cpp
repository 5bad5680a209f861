// CPU connected components of a radius graph within groups (see pointins/components.h):
// cells of side r / sqrt(3), neighbour cells by sort-merge, lock-free union-find on torch's OpenMP pool. Output: the root (smallest point
// index) of every point's component, -1 for points with a negative group.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/components.h"

namespace pointins {
namespace {

inline int64_t uf_find(int64_t* parent, int64_t x) {
  while (true) {
    const int64_t p = __atomic_load_n(&parent[x], __ATOMIC_RELAXED);
    if (p == x) return x;
    const int64_t gp = __atomic_load_n(&parent[p], __ATOMIC_RELAXED);
    if (gp != p) __atomic_store_n(&parent[x], gp, __ATOMIC_RELAXED);  // path halving (to an ancestor)
    x = gp;
  }
}

// Read-only root walk for the final pass (no path halving: see kernels/components.cu uf_root).
inline int64_t uf_root(const int64_t* parent, int64_t x) {
  int64_t p = __atomic_load_n(&parent[x], __ATOMIC_RELAXED);
  while (p != x) {
    x = p;
    p = __atomic_load_n(&parent[x], __ATOMIC_RELAXED);
  }
  return x;
}

inline void uf_union(int64_t* parent, int64_t a, int64_t b) {
  while (true) {
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b) return;
    if (a > b) std::swap(a, b);  // the larger root goes under the smaller
    int64_t expected = b;
    if (__atomic_compare_exchange_n(&parent[b], &expected, a, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
  }
}

template <typename T>
at::Tensor components_impl(const at::Tensor& coord, const at::Tensor& group, double radius) {
  const int64_t n = coord.size(0);
  const T* p = coord.data_ptr<T>();
  const int64_t* g = group.data_ptr<int64_t>();
  const double h = radius * POINTINS_CC_CELL_FACTOR;
  // 1. Cells (shifted so that every coordinate and its +-2 neighbours are >= 0).
  std::vector<int64_t> cell(3 * n);
  int flags = parallel_flags(n, 1 << 14, [&](int64_t i) {
    if (g[i] < 0) return 0;
    int f = 0;
    for (int a = 0; a < 3; ++a) {
      const double v = (double)p[3 * i + a];
      if (!std::isfinite(v)) return (int)POINTINS_FLAG_NONFINITE;
      const double c = std::floor(v / h);
      if (!(std::fabs(c) < 4e15)) f |= POINTINS_FLAG_OVERFLOW;
      cell[3 * i + a] = f ? 0 : (int64_t)c;
    }
    return f;
  });
  if (flags) raise_components_error(flags, coord, group, radius, 0);
  int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {INT64_MIN, INT64_MIN, INT64_MIN}, gmax = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (g[i] < 0) continue;
    gmax = std::max(gmax, g[i]);
    for (int a = 0; a < 3; ++a) lo[a] = std::min(lo[a], cell[3 * i + a]), hi[a] = std::max(hi[a], cell[3 * i + a]);
  }
  auto root = at::full({n}, -1, group.options());
  if (gmax < 0) return root;
  int64_t span = 0;
  for (int a = 0; a < 3; ++a) span = std::max(span, hi[a] - lo[a] + 2 * POINTINS_CC_REACH);
  int bits = 1;
  while (bits < 63 && ((int64_t)1 << bits) <= span) ++bits;
  if (bits > POINTINS_MAX_KEY_BITS || (gmax >> (63 - 3 * bits)) != 0)
    raise_components_error(POINTINS_FLAG_OVERFLOW, coord, group, radius, bits);
  // 2. Keys, stable sort: points grouped by cell, ascending index within a cell.
  auto keys = at::empty({n}, group.options());
  int64_t* k = keys.data_ptr<int64_t>();
  at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      k[i] = g[i] < 0 ? INT64_MAX
                      : cc_key(g[i], cell[3 * i] - lo[0] + POINTINS_CC_REACH, cell[3 * i + 1] - lo[1] + POINTINS_CC_REACH,
                               cell[3 * i + 2] - lo[2] + POINTINS_CC_REACH, bits);
    }
  });
  std::vector<int64_t>().swap(cell);
  auto [sorted_t, order_t] = at::sort(keys, /*stable=*/true, 0, false);
  const int64_t* sk = sorted_t.data_ptr<int64_t>();
  const int64_t* order = order_t.data_ptr<int64_t>();
  // 3. Cells: runs of equal keys (valid points only), and each cell's key.
  std::vector<int64_t> start;
  for (int64_t j = 0; j < n && sk[j] != INT64_MAX; ++j)
    if (j == 0 || sk[j] != sk[j - 1]) start.push_back(j);
  const int64_t m = (int64_t)start.size();
  start.push_back(m ? (int64_t)(std::lower_bound(sk, sk + n, INT64_MAX) - sk) : 0);
  std::vector<int64_t> ckey(m);
  for (int64_t c = 0; c < m; ++c) ckey[c] = sk[start[c]];
  // The points in cell order, contiguous: the distance tests read neighbouring cells' points sequentially.
  const int64_t nv = start[m];
  std::vector<T> sp(3 * nv);
  at::parallel_for(0, nv, 1 << 14, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j)
      for (int a = 0; a < 3; ++a) sp[3 * j + a] = p[3 * order[j] + a];
  });
  // Neighbour cells by sort-merge, as kernel_map does: the keys of offset t's neighbours, key + delta_t, are
  // sorted like the cell keys, so each offset's lookup is a forward step of one cursor over ckey (sequential
  // reads instead of random hash probes). The padding by POINTINS_CC_REACH keeps every neighbour coordinate in
  // [0, 2^bits): key + delta_t is exactly the neighbour's key.
  int64_t delta[POINTINS_CC_HALF_STENCIL];
  for (int t = 0; t < POINTINS_CC_HALF_STENCIL; ++t) {
    int dx, dy, dz;
    cc_offset(t, &dx, &dy, &dz);
    // Multiplies, not shifts: dx and dy may be negative (a left shift of a negative value is UB).
    delta[t] = (int64_t)dx * ((int64_t)1 << (2 * bits)) + (int64_t)dy * ((int64_t)1 << bits) + dz;
  }
  // 4. Union-find: a cell is connected by construction (parent = its first point).
  int64_t* parent = root.data_ptr<int64_t>();
  at::parallel_for(0, m, 1 << 10, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t j = start[c]; j < start[c + 1]; ++j) parent[order[j]] = order[start[c]];
  });
  const double r2 = radius * radius;
  at::parallel_for(0, m, 256, [&](int64_t c0, int64_t c1) {
    int64_t cur[POINTINS_CC_HALF_STENCIL];
    for (int t = 0; t < POINTINS_CC_HALF_STENCIL; ++t)
      cur[t] = std::lower_bound(ckey.begin(), ckey.end(), ckey[c0] + delta[t]) - ckey.begin();
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t key = ckey[c], a0 = order[start[c]];
      for (int t = 0; t < POINTINS_CC_HALF_STENCIL; ++t) {
        const int64_t nk = key + delta[t];
        int64_t c2 = cur[t];
        while (c2 < m && ckey[c2] < nk) ++c2;
        cur[t] = c2;
        if (c2 >= m || ckey[c2] != nk) continue;
        const int64_t b0 = order[start[c2]];
        if (uf_find(parent, a0) == uf_find(parent, b0)) continue;
        bool linked = false;
        for (int64_t ja = start[c]; ja < start[c + 1] && !linked; ++ja) {
          const T* pa = sp.data() + 3 * ja;
          for (int64_t jb = start[c2]; jb < start[c2 + 1]; ++jb) {
            const T* pb = sp.data() + 3 * jb;
            const double ex = (double)pa[0] - (double)pb[0], ey = (double)pa[1] - (double)pb[1],
                         ez = (double)pa[2] - (double)pb[2];
            if (ex * ex + ey * ey + ez * ez < r2) {
              linked = true;
              break;
            }
          }
        }
        if (linked) uf_union(parent, a0, b0);
      }
    }
  });
  at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if (g[i] >= 0) __atomic_store_n(&parent[i], uf_root(parent, i), __ATOMIC_RELAXED);  // own entry only
  });
  return root;
}

at::Tensor radius_components_cpu(const at::Tensor& coord_in, const at::Tensor& group_in, double radius) {
  check_components_args(coord_in, group_in, radius);
  check_cpu(coord_in, "coord", "connected_components");
  auto coord = coord_in.contiguous();
  auto group = group_in.contiguous();
  return coord.scalar_type() == at::kDouble ? components_impl<double>(coord, group, radius)
                                            : components_impl<float>(coord, group, radius);
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CPU, m) { m.impl("radius_components", &radius_components_cpu); }

}  // namespace pointins

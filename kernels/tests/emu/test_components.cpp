// Emulated kernels/components.cu: the radius-graph connected components pipeline of the C API
// (cells, cell keys, host sort, hash of cells, lock-free union-find, final pass) against a
// brute-force serial union-find; chains across cells, groups, one cell, duplicates, bad inputs.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "emu_test.h"
#include "pointins/components.h"
#include "pointins/pointins_kernels.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

template <typename T>
std::vector<int64_t> brute_force(const std::vector<T>& coord, const std::vector<int64_t>& group, double radius) {
  const int64_t n = (int64_t)group.size();
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  auto find = [&](int64_t x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
  };
  const double r2 = radius * radius;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      if (group[i] < 0 || group[i] != group[j]) continue;
      const double ex = (double)coord[3 * i] - (double)coord[3 * j], ey = (double)coord[3 * i + 1] - (double)coord[3 * j + 1],
                   ez = (double)coord[3 * i + 2] - (double)coord[3 * j + 2];
      if (ex * ex + ey * ey + ez * ez < r2) {
        const int64_t a = find(i), b = find(j);
        p[std::max(a, b)] = std::min(a, b);
      }
    }
  std::vector<int64_t> root(n, -1);
  for (int64_t i = 0; i < n; ++i)
    if (group[i] >= 0) root[i] = find(i);
  return root;
}

// The C API's five steps (pointins_kernels.h), host parts done serially. Returns flags.
template <typename T>
int run_components(const std::vector<T>& coord, const std::vector<int64_t>& group, double radius,
                   std::vector<int64_t>& root) {
  const int64_t n = (int64_t)group.size();
  const int dtype = sizeof(T) == 4 ? POINTINS_F32 : POINTINS_F64;
  root.assign(n, -1);
  std::vector<int64_t> cells(3 * n, -7);
  int32_t flags = 0;
  EOK(pointins_cc_cells(dtype, coord.data(), group.data(), n, radius * POINTINS_CC_CELL_FACTOR, cells.data(), &flags,
                        nullptr));
  if (flags) return flags;
  int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {INT64_MIN, INT64_MIN, INT64_MIN}, gmax = -1, n_valid = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (group[i] < 0) continue;
    ++n_valid;
    gmax = std::max(gmax, group[i]);
    for (int a = 0; a < 3; ++a) lo[a] = std::min(lo[a], cells[3 * i + a]), hi[a] = std::max(hi[a], cells[3 * i + a]);
  }
  if (n_valid == 0) return 0;
  int64_t span = 0;
  for (int a = 0; a < 3; ++a) span = std::max(span, hi[a] - lo[a] + 2 * POINTINS_CC_REACH);
  int bits = 1;
  while (bits < 63 && ((int64_t)1 << bits) <= span) ++bits;
  if (bits > POINTINS_MAX_KEY_BITS || (gmax >> (63 - 3 * bits)) != 0) return POINTINS_FLAG_OVERFLOW;
  std::vector<int64_t> keys(n);
  EOK(pointins_cc_keys(cells.data(), group.data(), n, lo[0], lo[1], lo[2], bits, keys.data(), nullptr));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  std::vector<int64_t> sorted(n), start, cell_of_pos(n_valid);
  for (int64_t j = 0; j < n; ++j) sorted[j] = keys[order[j]];
  for (int64_t j = 0; j < n_valid; ++j) {
    if (j == 0 || sorted[j] != sorted[j - 1]) start.push_back(j);
    cell_of_pos[j] = (int64_t)start.size() - 1;
  }
  const int64_t m = (int64_t)start.size();
  start.push_back(n_valid);
  std::vector<int64_t> cell_keys(m);
  for (int64_t c = 0; c < m; ++c) cell_keys[c] = sorted[start[c]];
  int64_t cap = 1;
  while (cap < 2 * m) cap <<= 1;
  if (cap <= m) cap <<= 1;
  std::vector<int64_t> tk(cap), tv(cap);
  int32_t hflags = 0;
  EOK(pointins_hash_init(tk.data(), tv.data(), cap, nullptr));
  EOK(pointins_hash_insert(cell_keys.data(), m, tk.data(), tv.data(), cap, nullptr, &hflags, nullptr));
  ECHECK(hflags == 0, "cell keys negative\n");
  EOK(pointins_cc_init_parent(order.data(), cell_of_pos.data(), start.data(), n_valid, root.data(), nullptr));
  EOK(pointins_cc_link(dtype, coord.data(), order.data(), sorted.data(), start.data(), m, bits, radius, tk.data(),
                       tv.data(), cap, root.data(), nullptr));
  EOK(pointins_cc_finalize(group.data(), n, root.data(), nullptr));
  return 0;
}

template <typename T>
void cc_case(const char* what, const std::vector<T>& coord, const std::vector<int64_t>& group, double radius,
             int expect_flags = 0) {
  const std::vector<int64_t> ref = expect_flags ? std::vector<int64_t>() : brute_force(coord, group, radius);
  for_schedules(what, [&] {
    std::vector<int64_t> root;
    const int flags = run_components(coord, group, radius, root);
    ECHECK(flags == expect_flags, "%s: flags %d, expected %d\n", what, flags, expect_flags);
    if (!expect_flags) {
      int64_t bad = 0, first = -1;
      for (size_t i = 0; i < ref.size(); ++i)
        if (root[i] != ref[i]) first = first < 0 ? (int64_t)i : first, ++bad;
      ECHECK(bad == 0, "%s: %lld of %zu components differ from brute force (first at %lld: %lld, expected %lld)\n",
             what, (long long)bad, ref.size(), (long long)first, first >= 0 ? (long long)root[first] : 0LL,
             first >= 0 ? (long long)ref[first] : 0LL);
    }
    std::vector<uint8_t> bytes;
    append(bytes, root);
    return bytes;
  });
}

template <typename T>
std::vector<T> clustered(std::mt19937_64& rng, int64_t n, int blobs, double spread, double box) {
  std::uniform_real_distribution<double> u(0.0, box), w(-spread, spread);
  std::vector<double> c(3 * blobs);
  for (auto& v : c) v = u(rng);
  std::vector<T> x(3 * n);
  for (int64_t i = 0; i < n; ++i) {
    const int b = (int)(rng() % (uint64_t)blobs);
    for (int a = 0; a < 3; ++a) x[3 * i + a] = (T)(c[3 * b + a] + w(rng));
  }
  return x;
}

EMU_CASE(components, random_clouds) {
  std::mt19937_64 rng(41);
  for (int trial = 0; trial < 4; ++trial) {
    const int64_t n = 200 + 300 * trial;
    std::vector<int64_t> group(n);
    for (auto& g : group) g = trial % 2 ? (int64_t)(rng() % 4) - 1 : 0;  // some ignored (-1), several groups
    const std::vector<float> x32 = clustered<float>(rng, n, 6, 1.5, 10.0);
    cc_case<float>("f32 clouds", x32, group, 0.35 + 0.1 * trial);
    const std::vector<double> x64 = clustered<double>(rng, n, 4, 2.0, 6.0);
    cc_case<double>("f64 clouds", x64, group, 0.3);
  }
  // Long chains across many cells: points on a line, spacing just under / over the radius.
  std::vector<double> line;
  for (int i = 0; i < 400; ++i) line.insert(line.end(), {i * 0.099, 0.5 * (i % 2), 0.0});
  cc_case<double>("chain", line, std::vector<int64_t>(400, 0), 0.1);
  cc_case<double>("chain broken", line, std::vector<int64_t>(400, 0), 0.0989);
}

EMU_CASE(components, deep_trees) {
  // Long chains with shuffled point numbers: many unions between cells in random order build deep
  // union-find trees, which is where a final pass that compresses paths while other threads store
  // roots (the pre-fix finalize) splits components.
  std::mt19937_64 rng(47);
  for (int trial = 0; trial < 2; ++trial) {
    const int64_t n = 1200;
    std::vector<int64_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<float> x(3 * n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = perm[i];
      x[3 * i] = (float)(p % 400) * 0.3f;  // three parallel chains, one cell per point
      x[3 * i + 1] = (float)(p / 400) * 10.0f;
      x[3 * i + 2] = 0.f;
    }
    cc_case<float>("shuffled chains", x, std::vector<int64_t>(n, 0), 0.31);
  }
}

EMU_CASE(components, edge_cases) {
  std::mt19937_64 rng(43);
  cc_case<float>("one point", std::vector<float>{1.f, 2.f, 3.f}, {0}, 0.5);
  cc_case<float>("all ignored", std::vector<float>(30, 1.f), std::vector<int64_t>(10, -1), 0.5);
  cc_case<float>("all points at one place", std::vector<float>(3 * 500, 2.5f), std::vector<int64_t>(500, 0), 0.1);
  std::vector<int64_t> groups(500);
  for (int64_t i = 0; i < 500; ++i) groups[i] = i % 7;
  cc_case<float>("one place, seven groups", std::vector<float>(3 * 500, 2.5f), groups, 0.1);
  const std::vector<double> x = clustered<double>(rng, 300, 3, 0.05, 1.0);
  cc_case<double>("one cell", x, std::vector<int64_t>(300, 0), 10.0);
  std::vector<float> bad = clustered<float>(rng, 100, 2, 1.0, 3.0);
  bad[3 * 17 + 2] = std::numeric_limits<float>::infinity();
  cc_case<float>("Inf coordinate", bad, std::vector<int64_t>(100, 0), 0.5, POINTINS_FLAG_NONFINITE);
  std::vector<int64_t> g100(100, 0);
  g100[17] = -1;  // an ignored point may hold anything
  cc_case<float>("Inf in an ignored point", bad, g100, 0.5);
  // Invalid arguments are refused before any launch.
  std::vector<int64_t> cells(3), one(2, 0);
  int32_t flags = 0;
  ECHECK(pointins_cc_cells(POINTINS_F16, bad.data(), one.data(), 1, 0.1, cells.data(), &flags, nullptr) ==
             cudaErrorInvalidValue,
         "f16 cells accepted\n");
  ECHECK(pointins_cc_link(POINTINS_BF16, bad.data(), one.data(), one.data(), one.data(), 1, 4, 0.1, one.data(),
                          one.data(), 2, one.data(), nullptr) == cudaErrorInvalidValue,
         "bf16 link accepted\n");
  std::vector<double> far = {0, 0, 0, 1e14, 0, 0};
  cc_case<double>("cell overflow", far, {0, 0}, 1e-3, POINTINS_FLAG_OVERFLOW);
}

}  // namespace

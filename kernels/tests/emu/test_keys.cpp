// Emulated kernels/keys.cu: pack/unpack keys and grid coordinates (per-sample minimum with warp
// reductions and atomics) against serial references, edge cases and bad inputs.
#include <cmath>
#include <limits>

#include "emu_test.h"
#include "pointins/keys.h"
#include "pointins/pointins_kernels.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

template <typename T>
void pack_case(const char* what, const std::vector<T>& grid, const std::vector<int64_t>* batch, int bits) {
  const int64_t n = (int64_t)grid.size() / 3;
  std::vector<int64_t> ref(n);
  int ref_flags = 0;
  for (int64_t i = 0; i < n; ++i)
    ref_flags |= pointins::pack_key<T>(grid[3 * i], grid[3 * i + 1], grid[3 * i + 2], batch ? (*batch)[i] : 0, bits,
                                       &ref[i]);
  for_schedules(what, [&] {
    std::vector<int64_t> keys(n, -7);
    int32_t flags = 0;
    const int64_t* b = batch ? batch->data() : nullptr;
    if (sizeof(T) == 4)
      EOK(pointins_pack_keys_i32(reinterpret_cast<const int32_t*>(grid.data()), b, n, bits, keys.data(), &flags, nullptr));
    else
      EOK(pointins_pack_keys_i64(reinterpret_cast<const int64_t*>(grid.data()), b, n, bits, keys.data(), &flags, nullptr));
    ECHECK(keys == ref, "%s: keys differ from pack_key\n", what);
    ECHECK(flags == ref_flags, "%s: flags %d, expected %d\n", what, flags, ref_flags);
    if (ref_flags == 0 && n > 0) {
      std::vector<int32_t> back(3 * n, -1);
      std::vector<int64_t> bb(n, -1);
      int32_t f2 = 0;
      EOK(pointins_unpack_keys(keys.data(), n, bits, back.data(), bb.data(), &f2, nullptr));
      bool same = f2 == 0;
      for (int64_t i = 0; i < 3 * n; ++i) same = same && back[i] == (int32_t)grid[i];
      for (int64_t i = 0; i < n; ++i) same = same && bb[i] == (batch ? (*batch)[i] : 0);
      ECHECK(same, "%s: unpack(pack(x)) != x\n", what);
    }
    std::vector<uint8_t> out;
    append(out, keys);
    return out;
  });
}

EMU_CASE(keys, pack_unpack) {
  std::mt19937_64 rng(3);
  for (int bits : {1, 9, 16, 21}) {
    for (int64_t n : {1, 31, 257, 1000}) {
      std::vector<int32_t> g32(3 * n);
      std::vector<int64_t> g64(3 * n), batch(n);
      const int64_t lim = (int64_t)1 << bits;
      for (int64_t i = 0; i < 3 * n; ++i) g64[i] = g32[i] = (int32_t)(rng() % (uint64_t)lim);
      const int64_t bcap = pointins::key_batch_capacity(bits);
      for (auto& b : batch) b = (int64_t)(rng() % (uint64_t)std::min<int64_t>(bcap, 1000));
      pack_case("pack i32", g32, &batch, bits);
      pack_case("pack i64 no batch", g64, nullptr, bits);
    }
  }
  // Bad values: negative, overflowing, batch out of range -> flags, keys 0.
  std::vector<int32_t> bad = {0, 0, 0, -1, 2, 3, 1 << 16, 0, 0, 5, 5, 5};
  std::vector<int64_t> batch = {0, 0, 0, -2};
  pack_case("pack bad", bad, &batch, 16);
  std::vector<int64_t> big = {0, 0, 0, (int64_t)1 << 40, 0, 0};
  std::vector<int64_t> bb = {0, pointins::key_batch_capacity(21)};
  pack_case("pack i64 overflow", big, &bb, 21);
  // Negative keys -> POINTINS_FLAG_BAD_KEY, zeroed outputs.
  std::vector<int64_t> keys = {5, -1, 7, INT64_MIN};
  for_schedules("unpack bad", [&] {
    std::vector<int32_t> g(12, 9);
    std::vector<int64_t> b(4, 9);
    int32_t flags = 0;
    EOK(pointins_unpack_keys(keys.data(), 4, 16, g.data(), b.data(), &flags, nullptr));
    ECHECK(flags == POINTINS_FLAG_BAD_KEY && g[3] == 0 && b[1] == 0 && g[2] == 5, "unpack bad keys\n");
    return std::vector<uint8_t>();
  });
  int32_t flags = 0;
  ECHECK(pointins_pack_keys_i32(nullptr, nullptr, 4, 22, nullptr, &flags, nullptr) == cudaErrorInvalidValue,
         "bits 22 accepted\n");
  ECHECK(pointins_pack_keys_i32(nullptr, nullptr, -1, 16, nullptr, &flags, nullptr) == cudaErrorInvalidValue,
         "n < 0 accepted\n");
  ECHECK(pointins_pack_keys_i32(nullptr, nullptr, 0, 16, nullptr, &flags, nullptr) == 0, "n = 0 refused\n");
}

template <typename F>
void grid_case(const char* what, const std::vector<F>& coord, const std::vector<int64_t>& off, F gx, F gy, F gz) {
  const int64_t n = (int64_t)coord.size() / 3, S = (int64_t)off.size() - 1;
  // Serial reference (valid offsets only).
  std::vector<int32_t> ref(3 * n, 0);
  int ref_flags = 0;
  bool offsets_ok = off[0] == 0 && off[S] == n;
  for (int64_t s = 0; s < S; ++s) offsets_ok = offsets_ok && off[s + 1] >= off[s];
  if (!offsets_ok) ref_flags |= POINTINS_FLAG_BAD_OFFSETS;
  if (offsets_ok) {
    const F g[3] = {gx, gy, gz};
    for (int64_t s = 0; s < S; ++s) {
      int32_t mn[3] = {INT32_MAX, INT32_MAX, INT32_MAX};
      for (int64_t i = off[s]; i < off[s + 1]; ++i)
        for (int a = 0; a < 3; ++a) {
          ref_flags |= pointins::grid_index<F>(coord[3 * i + a], g[a], &ref[3 * i + a]);
          mn[a] = std::min(mn[a], ref[3 * i + a]);
        }
      for (int64_t i = off[s]; i < off[s + 1]; ++i)
        for (int a = 0; a < 3; ++a) ref[3 * i + a] -= mn[a];
    }
  }
  for_schedules(what, [&] {
    std::vector<int32_t> out(3 * n, -99);
    std::vector<uint8_t> ws((size_t)pointins_grid_coord_workspace_size(S));
    int32_t flags = 0;
    if (sizeof(F) == 4)
      EOK(pointins_grid_coord_f32(reinterpret_cast<const float*>(coord.data()), off.data(), S, n, (float)gx, (float)gy,
                                  (float)gz, out.data(), ws.data(), &flags, nullptr));
    else
      EOK(pointins_grid_coord_f64(reinterpret_cast<const double*>(coord.data()), off.data(), S, n, gx, gy, gz,
                                  out.data(), ws.data(), &flags, nullptr));
    ECHECK(flags == ref_flags, "%s: flags %d, expected %d\n", what, flags, ref_flags);
    if (ref_flags == 0) ECHECK(out == ref, "%s: grid coordinates differ from the serial reference\n", what);
    std::vector<uint8_t> bytes;
    append(bytes, out);
    append(bytes, std::vector<int32_t>{flags});
    return ref_flags == 0 ? bytes : std::vector<uint8_t>{(uint8_t)flags};
  });
}

EMU_CASE(keys, grid_coord) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-50.0, 50.0);
  for (int trial = 0; trial < 6; ++trial) {
    // Sample sizes straddle warps (1, 31..33, empty, long) so warps are both uniform and mixed.
    std::vector<int64_t> sizes = emu_test::random_sizes(rng, 1 + trial * 5, 300);
    const std::vector<int64_t> off = emu_test::csr(sizes);
    const int64_t n = off.back();
    std::vector<float> c32(3 * n);
    std::vector<double> c64(3 * n);
    for (int64_t i = 0; i < 3 * n; ++i) c64[i] = c32[i] = (float)u(rng);
    grid_case<float>("grid f32", c32, off, 0.05f, 0.1f, 0.02f);
    grid_case<double>("grid f64", c64, off, 0.05, 0.1, 0.02);
  }
  // One cloud of many points, many clouds of one point, all points in one cell, one point.
  std::vector<float> many(3 * 700);
  for (auto& v : many) v = (float)u(rng);
  grid_case<float>("one cloud", many, {0, 700}, 0.3f, 0.3f, 0.3f);
  std::vector<int64_t> ones(701);
  for (int64_t i = 0; i <= 700; ++i) ones[i] = i;
  grid_case<float>("clouds of one point", many, ones, 0.3f, 0.3f, 0.3f);
  std::vector<float> same(3 * 100, 1.25f);
  grid_case<float>("one cell", same, {0, 40, 100}, 1.0f, 1.0f, 1.0f);
  grid_case<float>("one point", std::vector<float>{-3.5f, 2.0f, 7.0f}, {0, 1}, 1.0f, 1.0f, 1.0f);
  grid_case<float>("empty", std::vector<float>{}, {0, 0, 0}, 1.0f, 1.0f, 1.0f);
  // Bad inputs: NaN / Inf, a coordinate past the grid limit, bad offsets.
  std::vector<float> nan = many;
  nan[3 * 77 + 1] = std::numeric_limits<float>::quiet_NaN();
  grid_case<float>("NaN", nan, {0, 700}, 0.3f, 0.3f, 0.3f);
  std::vector<double> huge(3 * 40, 1.0);
  huge[5] = 1e12;
  grid_case<double>("overflow", huge, {0, 40}, 1e-3, 1e-3, 1e-3);
  grid_case<float>("offsets not ending at n", many, {0, 300, 600}, 0.3f, 0.3f, 0.3f);
  grid_case<float>("decreasing offsets", many, {0, 400, 300, 700}, 0.3f, 0.3f, 0.3f);
}

}  // namespace

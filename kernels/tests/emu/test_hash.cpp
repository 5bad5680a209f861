// Emulated kernels/hash.cu: concurrent hash inserts (CAS + atomicMin), queries, the voxel grouping
// pipeline (mark, host scan, assign), seeded random selection and submanifold kernel maps, against
// serial references (std::unordered_map), edge cases (duplicates, a full table, one voxel) and bad keys.
#include <unordered_map>

#include "emu_test.h"
#include "pointins/hash.h"
#include "pointins/keys.h"
#include "pointins/pointins_kernels.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

int64_t capacity_for(int64_t n, int64_t factor = 2) {
  int64_t c = 1;
  while (c <= n * factor / 2 || c <= n) c <<= 1;
  return c;
}

struct Table {
  std::vector<int64_t> keys, vals;
};

Table build(const std::vector<int64_t>& keys, int64_t cap, std::vector<int64_t>* slots, int32_t* flags) {
  Table t{std::vector<int64_t>(cap, 123), std::vector<int64_t>(cap, 456)};
  EOK(pointins_hash_init(t.keys.data(), t.vals.data(), cap, nullptr));
  EOK(pointins_hash_insert(keys.data(), (int64_t)keys.size(), t.keys.data(), t.vals.data(), cap,
                           slots ? slots->data() : nullptr, flags, nullptr));
  return t;
}

void insert_query_case(const char* what, const std::vector<int64_t>& keys, int64_t cap) {
  const int64_t n = (int64_t)keys.size();
  std::unordered_map<int64_t, int64_t> first;
  int ref_flags = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (keys[i] < 0) {
      ref_flags |= POINTINS_FLAG_BAD_KEY;
      continue;
    }
    first.emplace(keys[i], i);
  }
  std::vector<int64_t> queries = keys;
  std::mt19937_64 rng(n);
  for (int j = 0; j < 50; ++j) queries.push_back((int64_t)(rng() >> 1));  // mostly absent
  queries.push_back(-5);
  for_schedules(what, [&] {
    std::vector<int64_t> slots(n, -9);
    int32_t flags = 0;
    Table t = build(keys, cap, &slots, &flags);
    ECHECK(flags == ref_flags, "%s: flags %d, expected %d\n", what, flags, ref_flags);
    std::vector<int64_t> out(queries.size(), -9);
    EOK(pointins_hash_query(t.keys.data(), t.vals.data(), cap, queries.data(), (int64_t)queries.size(), out.data(),
                            nullptr));
    for (size_t j = 0; j < queries.size(); ++j) {
      auto it = first.find(queries[j]);
      ECHECK(out[j] == (it == first.end() ? -1 : it->second), "%s: query %zu\n", what, j);
    }
    int64_t used = 0;
    for (int64_t s = 0; s < cap; ++s) used += t.keys[s] != POINTINS_HASH_EMPTY;
    ECHECK(used == (int64_t)first.size(), "%s: %lld slots used for %zu keys\n", what, (long long)used, first.size());
    for (int64_t i = 0; i < n; ++i)
      ECHECK(keys[i] < 0 ? slots[i] == -1 : t.keys[slots[i]] == keys[i], "%s: slot of %lld\n", what, (long long)i);
    std::vector<uint8_t> bytes;
    append(bytes, out);  // the slot layout may differ between schedules; query results may not
    return bytes;
  });
}

EMU_CASE(hash, insert_query) {
  std::mt19937_64 rng(7);
  for (int64_t n : {1, 100, 1500}) {
    std::vector<int64_t> keys(n);
    for (auto& k : keys) k = (int64_t)(rng() % (uint64_t)(n / 3 + 1)) * 977;  // many duplicates
    insert_query_case("duplicates", keys, capacity_for(n));
    for (auto& k : keys) k = (int64_t)(rng() >> 1);
    insert_query_case("distinct", keys, capacity_for(n));
  }
  // A full table: capacity n + 1 (the minimum), every key distinct, long probe chains.
  std::vector<int64_t> full(255);
  for (int64_t i = 0; i < 255; ++i) full[i] = i * 4096;
  insert_query_case("full table", full, 256);
  // Negative keys are skipped with POINTINS_FLAG_BAD_KEY.
  insert_query_case("bad keys", std::vector<int64_t>{5, -1, 5, 9, INT64_MIN, 0}, 16);
  std::vector<int64_t> tk(8), tv(8);
  int32_t flags = 0;
  ECHECK(pointins_hash_init(tk.data(), tv.data(), 6, nullptr) == cudaErrorInvalidValue, "capacity 6 accepted\n");
  ECHECK(pointins_hash_insert(full.data(), 8, tk.data(), tv.data(), 8, nullptr, &flags, nullptr) ==
             cudaErrorInvalidValue,
         "n >= capacity accepted\n");
}

void voxel_case(const char* what, const std::vector<int64_t>& keys, uint64_t seed) {
  const int64_t n = (int64_t)keys.size();
  // Reference: voxels numbered by first occurrence.
  std::unordered_map<int64_t, int64_t> vid;
  std::vector<int64_t> inv(n), first, counts;
  for (int64_t i = 0; i < n; ++i) {
    auto it = vid.find(keys[i]);
    if (it == vid.end()) {
      it = vid.emplace(keys[i], (int64_t)first.size()).first;
      first.push_back(i);
      counts.push_back(0);
    }
    inv[i] = it->second;
    ++counts[it->second];
  }
  const int64_t V = (int64_t)first.size();
  std::vector<int64_t> sel_ref(V, INT64_MAX);
  for (int64_t i = 0; i < n; ++i) sel_ref[inv[i]] = std::min(sel_ref[inv[i]], pointins::select_pack(seed, i));
  for (auto& v : sel_ref) v = pointins::select_index(v);
  for_schedules(what, [&] {
    const int64_t cap = capacity_for(n);
    std::vector<int64_t> slots(n);
    int32_t flags = 0;
    Table t = build(keys, cap, &slots, &flags);
    std::vector<int64_t> is_first(n, -1), rank(n);
    EOK(pointins_voxel_mark(t.vals.data(), slots.data(), n, is_first.data(), nullptr));
    int64_t acc = 0;
    for (int64_t i = 0; i < n; ++i) rank[i] = acc, acc += is_first[i];
    ECHECK(acc == V, "%s: %lld voxels, expected %lld\n", what, (long long)acc, (long long)V);
    std::vector<int64_t> fst(V, -1), cnt(V, 0);
    EOK(pointins_voxel_assign(t.vals.data(), rank.data(), n, slots.data(), fst.data(), cnt.data(), nullptr));
    ECHECK(slots == inv && fst == first && cnt == counts, "%s: inverse / first / counts differ\n", what);
    std::vector<int64_t> sel(V, -9);
    EOK(pointins_voxel_select(inv.data(), n, V, seed, sel.data(), &flags, nullptr));
    ECHECK(flags == 0 && sel == sel_ref, "%s: selected points differ\n", what);
    std::vector<uint8_t> bytes;
    append(bytes, slots);
    append(bytes, fst);
    append(bytes, cnt);
    append(bytes, sel);
    return bytes;
  });
}

EMU_CASE(hash, voxelize_and_select) {
  std::mt19937_64 rng(11);
  for (int64_t n : {1, 77, 2000}) {
    std::vector<int64_t> keys(n);
    for (auto& k : keys) k = (int64_t)(rng() % (uint64_t)(n / 4 + 1));
    voxel_case("voxels", keys, 1234);
  }
  voxel_case("all points in one voxel", std::vector<int64_t>(600, 42), 9);
  std::vector<int64_t> distinct(300);
  for (int64_t i = 0; i < 300; ++i) distinct[i] = 300 - i;
  voxel_case("one point per voxel", distinct, 5);
  // Inverse values out of range set POINTINS_FLAG_BAD_OFFSETS and are skipped.
  for_schedules("select bad inverse", [&] {
    std::vector<int64_t> inv = {0, 1, 7, -1, 1}, sel(2, -9);
    int32_t flags = 0;
    EOK(pointins_voxel_select(inv.data(), 5, 2, 3, sel.data(), &flags, nullptr));
    ECHECK(flags == POINTINS_FLAG_BAD_OFFSETS && sel[0] == 0 && (sel[1] == 1 || sel[1] == 4), "select bad inverse\n");
    return std::vector<uint8_t>();
  });
  for_schedules("select empty voxel", [&] {
    std::vector<int64_t> inv = {0, 0, 2}, sel(3, -9);
    int32_t flags = 0;
    EOK(pointins_voxel_select(inv.data(), 3, 3, 3, sel.data(), &flags, nullptr));
    ECHECK(flags == 0 && sel[1] == -1 && sel[2] == 2, "empty voxel selection\n");
    return std::vector<uint8_t>();
  });
}

void kernel_map_case(const char* what, const std::vector<int32_t>& grid, const std::vector<int64_t>* batch, int bits,
                     int k, int dilation) {
  const int64_t n = (int64_t)grid.size() / 3, kv = (int64_t)k * k * k;
  std::vector<int64_t> keys(n);
  std::unordered_map<int64_t, int64_t> index;
  for (int64_t i = 0; i < n; ++i) {
    pointins::pack_key<int32_t>(grid[3 * i], grid[3 * i + 1], grid[3 * i + 2], batch ? (*batch)[i] : 0, bits, &keys[i]);
    index.emplace(keys[i], i);
  }
  std::vector<int64_t> ref(n * kv, -1);
  const int64_t lim = (int64_t)1 << bits;
  for (int64_t i = 0; i < n; ++i)
    for (int q = 0; q < kv; ++q) {
      int dx, dy, dz;
      pointins::kernel_offset(q, k, dilation, &dx, &dy, &dz);
      const int64_t x = grid[3 * i] + dx, y = grid[3 * i + 1] + dy, z = grid[3 * i + 2] + dz;
      if (x < 0 || y < 0 || z < 0 || x >= lim || y >= lim || z >= lim) continue;
      int64_t key;
      pointins::pack_key<int64_t>(x, y, z, batch ? (*batch)[i] : 0, bits, &key);
      auto it = index.find(key);
      if (it != index.end()) ref[i * kv + q] = it->second;
    }
  for_schedules(what, [&] {
    const int64_t cap = capacity_for(n);
    int32_t flags = 0;
    Table t = build(keys, cap, nullptr, &flags);
    std::vector<int64_t> out(n * kv, -9);
    EOK(pointins_kernel_map(grid.data(), batch ? batch->data() : nullptr, n, bits, k, dilation, t.keys.data(),
                            t.vals.data(), cap, out.data(), nullptr));
    ECHECK(flags == 0 && out == ref, "%s: kernel map differs from the reference\n", what);
    std::vector<uint8_t> bytes;
    append(bytes, out);
    return bytes;
  });
}

EMU_CASE(hash, kernel_map) {
  std::mt19937_64 rng(13);
  // Dense-ish unique voxels in a small box (many neighbours), two batches, boundary coordinates.
  for (int trial = 0; trial < 3; ++trial) {
    const int side = 6 + trial * 3;
    std::vector<int32_t> grid;
    std::vector<int64_t> batch;
    for (int b = 0; b < 2; ++b)
      for (int x = 0; x < side; ++x)
        for (int y = 0; y < side; ++y)
          for (int z = 0; z < side; ++z)
            if (rng() % 3 == 0) grid.insert(grid.end(), {x, y, z}), batch.push_back(b);
    kernel_map_case("k=3", grid, &batch, 5, 3, 1);
    kernel_map_case("k=5 dilation 2", grid, &batch, 5, 5, 2);
  }
  kernel_map_case("one voxel k=1", std::vector<int32_t>{0, 0, 0}, nullptr, 16, 1, 1);
  kernel_map_case("one voxel k=7", std::vector<int32_t>{3, 0, 1}, nullptr, 3, 7, 1);
  std::vector<int32_t> grid(3);
  std::vector<int64_t> out(1);
  ECHECK(pointins_kernel_map(grid.data(), nullptr, 1, 16, 4, 1, nullptr, nullptr, 8, out.data(), nullptr) ==
             cudaErrorInvalidValue,
         "even kernel size accepted\n");
}

}  // namespace

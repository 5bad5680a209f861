// CPU implementations of the hash table, voxel grouping / random selection and kernel maps.
// Parallel insertion uses GCC/Clang __atomic builtins on the int64 slots (lock-free CAS).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <climits>
#include <vector>

#include "../common.h"
#include "pointins/hash.h"
#include "pointins/keys.h"

namespace pointins {
namespace {

constexpr int64_t kGrain = 1 << 13;

void check_cpu(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "pointins.", op, ": ", name, " is on ", t.device(),
                    "; this is the CPU implementation.");
}

inline void atomic_min_i64(int64_t* p, int64_t v) {
  int64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

// Inserts keys[i] for all i; slot[i] receives the slot of key i. Returns false on a negative key.
bool hash_insert_all(const int64_t* keys, int64_t n, int64_t* tk, int64_t* tv, int64_t cap, int64_t* slot) {
  const int64_t mask = cap - 1;
  std::atomic<bool> bad{false};
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t key = keys[i];
      if (key < 0) {
        bad.store(true, std::memory_order_relaxed);
        if (slot) slot[i] = -1;
        continue;
      }
      int64_t s = (int64_t)(hash_mix((uint64_t)key) & (uint64_t)mask);
      while (true) {
        int64_t expected = POINTINS_HASH_EMPTY;
        if (__atomic_compare_exchange_n(&tk[s], &expected, key, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
            expected == key) {
          atomic_min_i64(&tv[s], i);
          if (slot) slot[i] = s;
          break;
        }
        s = (s + 1) & mask;
      }
    }
  });
  return !bad.load();
}

std::tuple<at::Tensor, at::Tensor> new_table(const at::Tensor& like, int64_t cap) {
  return {at::full({cap}, POINTINS_HASH_EMPTY, like.options().dtype(at::kLong)),
          at::full({cap}, INT64_MAX, like.options().dtype(at::kLong))};
}

std::tuple<at::Tensor, at::Tensor> hash_build_cpu(const at::Tensor& keys_in, int64_t capacity) {
  check_keys_tensor(keys_in, "keys", "HashTable");
  check_cpu(keys_in, "keys", "HashTable");
  auto keys = keys_in.contiguous();
  const int64_t n = keys.numel();
  TORCH_CHECK_VALUE(capacity > n && (capacity & (capacity - 1)) == 0, "pointins.HashTable: capacity must be a power of two "
                    "larger than the number of keys (", n, "), got ", capacity, ".");
  auto [tk, tv] = new_table(keys, capacity);
  if (!hash_insert_all(keys.data_ptr<int64_t>(), n, tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), capacity, nullptr))
    raise_negative_keys(keys, "HashTable");
  return {tk, tv};
}

at::Tensor hash_query_cpu(const at::Tensor& tk_in, const at::Tensor& tv_in, const at::Tensor& q_in) {
  check_table(tk_in, tv_in, "HashTable.query");
  check_keys_tensor(q_in, "queries", "HashTable.query");
  check_cpu(q_in, "queries", "HashTable.query");
  auto tk = tk_in.contiguous(), tv = tv_in.contiguous(), q = q_in.contiguous();
  const int64_t m = q.numel(), mask = tk.numel() - 1;
  auto out = at::empty({m}, q.options());
  const int64_t *k = tk.data_ptr<int64_t>(), *v = tv.data_ptr<int64_t>(), *qq = q.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, m, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) o[i] = hash_lookup(k, v, mask, qq[i]);
  });
  return out;
}

// Exclusive prefix sum of flags[0..n) into out, chunked over threads; returns the total.
int64_t exclusive_scan(const int64_t* flags, int64_t n, int64_t* out) {
  const int64_t chunk = std::max<int64_t>(kGrain, (n + 63) / 64);
  const int64_t nc = (n + chunk - 1) / chunk;
  std::vector<int64_t> sums(nc + 1, 0);
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t s = 0;
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) s += flags[i];
      sums[c + 1] = s;
    }
  });
  for (int64_t c = 0; c < nc; ++c) sums[c + 1] += sums[c];
  at::parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t s = sums[c];
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
        out[i] = s;
        s += flags[i];
      }
    }
  });
  return sums[nc];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> voxel_group_cpu(const at::Tensor& keys_in) {
  check_keys_tensor(keys_in, "keys", "voxelize");
  check_cpu(keys_in, "keys", "voxelize");
  auto keys = keys_in.contiguous();
  const int64_t n = keys.numel(), cap = hash_capacity_for(n);
  auto [tk, tv] = new_table(keys, cap);
  auto inverse = at::empty({n}, keys.options());
  int64_t* inv = inverse.data_ptr<int64_t>();  // holds slots first, then voxel ids
  if (!hash_insert_all(keys.data_ptr<int64_t>(), n, tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), cap, inv))
    raise_negative_keys(keys, "voxelize");
  const int64_t* v = tv.data_ptr<int64_t>();
  std::vector<int64_t> is_first(n), scan(n);
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) is_first[i] = v[inv[i]] == i;
  });
  const int64_t nv = exclusive_scan(is_first.data(), n, scan.data());
  auto first = at::empty({nv}, keys.options());
  auto counts = at::zeros({nv}, keys.options());
  int64_t *f = first.data_ptr<int64_t>(), *c = counts.data_ptr<int64_t>();
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t vid = scan[v[inv[i]]];
      inv[i] = vid;
      if (is_first[i]) f[vid] = i;
      __atomic_fetch_add(&c[vid], 1, __ATOMIC_RELAXED);
    }
  });
  return {inverse, first, counts};
}

at::Tensor voxel_select_cpu(const at::Tensor& inverse_in, int64_t num_voxels, int64_t seed) {
  check_keys_tensor(inverse_in, "inverse", "voxelize");
  check_cpu(inverse_in, "inverse", "voxelize");
  TORCH_CHECK_VALUE(num_voxels >= 0, "pointins.voxelize: num_voxels must be >= 0, got ", num_voxels, ".");
  auto inverse = inverse_in.contiguous();
  const int64_t n = inverse.numel();
  TORCH_CHECK_VALUE(n < ((int64_t)1 << POINTINS_SELECT_INDEX_BITS), "pointins.voxelize: random selection supports up to 2^",
                    POINTINS_SELECT_INDEX_BITS, " points per call, got ", n, ".");
  auto sel = at::full({num_voxels}, INT64_MAX, inverse.options());
  int64_t* s = sel.data_ptr<int64_t>();
  const int64_t* inv = inverse.data_ptr<int64_t>();
  std::atomic<bool> bad{false};
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t vid = inv[i];
      if (vid < 0 || vid >= num_voxels) {
        bad.store(true, std::memory_order_relaxed);
        continue;
      }
      atomic_min_i64(&s[vid], select_pack((uint64_t)seed, i));
    }
  });
  TORCH_CHECK_VALUE(!bad.load(), "pointins.voxelize: inverse holds voxel ids outside [0, ", num_voxels, ").");
  at::parallel_for(0, num_voxels, kGrain, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) s[v] = s[v] == INT64_MAX ? -1 : select_index(s[v]);
  });
  return sel;
}

at::Tensor kernel_map_cpu(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t kernel_size,
                          int64_t dilation, int64_t bits) {
  check_kernel_map_args(grid_in, batch_in, kernel_size, dilation, bits);
  check_cpu(grid_in, "grid_coord", "kernel_map");
  auto grid = grid_in.to(at::kInt).contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid.size(0), kv = kernel_size * kernel_size * kernel_size, cap = hash_capacity_for(n);
  const int32_t* g = grid.data_ptr<int32_t>();
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  auto keys = at::empty({n}, grid.options().dtype(at::kLong));
  int64_t* k = keys.data_ptr<int64_t>();
  std::atomic<int> flags{0};
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    int acc = 0;
    for (int64_t i = i0; i < i1; ++i)
      acc |= pack_key<int32_t>(g[3 * i], g[3 * i + 1], g[3 * i + 2], b ? b[i] : 0, (int)bits, &k[i]);
    if (acc) flags.fetch_or(acc, std::memory_order_relaxed);
  });
  if (flags.load()) raise_pack_error(flags.load(), grid, batch_in, bits);
  auto [tk, tv] = new_table(keys, cap);
  hash_insert_all(k, n, tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), cap, nullptr);
  auto out = at::empty({n, kv}, keys.options());
  int64_t* o = out.data_ptr<int64_t>();
  const int64_t *tkp = tk.data_ptr<int64_t>(), *tvp = tv.data_ptr<int64_t>(), mask = cap - 1;
  const int64_t lim = (int64_t)1 << bits;
  at::parallel_for(0, n, kGrain / 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int q = 0; q < kv; ++q) {
        int dx, dy, dz;
        kernel_offset(q, (int)kernel_size, (int)dilation, &dx, &dy, &dz);
        const int64_t x = g[3 * i] + dx, y = g[3 * i + 1] + dy, z = g[3 * i + 2] + dz;
        int64_t r = -1;
        if (x >= 0 && y >= 0 && z >= 0 && x < lim && y < lim && z < lim) {
          int64_t key;
          pack_key<int64_t>(x, y, z, b ? b[i] : 0, (int)bits, &key);
          r = hash_lookup(tkp, tvp, mask, key);
        }
        o[i * kv + q] = r;
      }
    }
  });
  return out;
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("hash_build", &pointins::hash_build_cpu);
  m.impl("hash_query", &pointins::hash_query_cpu);
  m.impl("voxel_group", &pointins::voxel_group_cpu);
  m.impl("voxel_select", &pointins::voxel_select_cpu);
  m.impl("kernel_map", &pointins::kernel_map_cpu);
}

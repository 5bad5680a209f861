// CPU implementations of the hash table, voxel grouping / random selection and kernel maps.
// Parallel insertion uses GCC/Clang __atomic builtins on the int64 slots (lock-free CAS).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <memory>
#include <tuple>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/hash.h"
#include "pointins/keys.h"

namespace pointins {
namespace {

constexpr int64_t kGrain = 1 << 13;

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

// Unique keys numbered by first occurrence, radix-partitioned so that every table fits in cache:
//   A. bucket = top bits of hash(key); per-chunk histograms          (sequential)
//   B. stable scatter of (key, index) into per-bucket runs            (P write streams)
//   C. per bucket, one thread, no atomics: a small local table with each voxel's first index,
//      count and best random priority (train-mode selection)         (L2-resident)
//   D. bitmap of first indices + per-word prefix counts: rank(first) = global voxel id
//   E. per bucket: voxel outputs, and each entry's global id          (L2-resident)
//   F. per-point inverse by replaying B's cursors                      (P read streams)
// Deterministic for any thread count: the result depends on the keys (and seed) only.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_group_cpu(const at::Tensor& keys_in,
                                                                           c10::optional<int64_t> seed) {
  check_keys_tensor(keys_in, "keys", "voxelize");
  check_cpu(keys_in, "keys", "voxelize");
  auto keys = keys_in.contiguous();
  const int64_t n = keys.numel();
  TORCH_CHECK_VALUE(n < ((int64_t)1 << POINTINS_SELECT_INDEX_BITS), "pointins.voxelize: at most 2^",
                    POINTINS_SELECT_INDEX_BITS, " points per call, got ", n, ".");
  const auto opts = keys.options();
  if (n == 0) return {keys.new_empty({0}), keys.new_empty({0}), keys.new_empty({0}), keys.new_empty({0})};
  const int64_t* k = keys.data_ptr<int64_t>();
  const bool select = seed.has_value();
  const uint64_t sd = select ? (uint64_t)*seed : 0;

  int pbits = 0;
  while (pbits < 12 && (n >> pbits) > 32768) ++pbits;  // buckets of <= 32K keys: tables of <= 768 KB
  const int64_t P = (int64_t)1 << pbits;
  const int64_t nchunks = std::min<int64_t>((n + 4095) / 4096, 4 * (int64_t)at::get_num_threads());
  const int64_t chunk = (n + nchunks - 1) / nchunks;
  std::unique_ptr<uint16_t[]> bucket(new uint16_t[n]);

  // A. buckets + histograms
  std::vector<int64_t> hist(nchunks * P, 0);
  std::atomic<bool> negative{false};
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t* h = &hist[c * P];
      bool neg = false;
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
        neg |= k[i] < 0;
        const uint16_t bk = pbits == 0 ? 0 : (uint16_t)(hash_mix((uint64_t)k[i]) >> (64 - pbits));
        bucket[i] = bk;
        ++h[bk];
      }
      if (neg) negative.store(true, std::memory_order_relaxed);
    }
  });
  if (negative.load()) raise_negative_keys(keys, "voxelize");
  std::vector<int64_t> cursor(nchunks * P), bstart(P + 1, 0);
  {
    int64_t pos = 0;
    for (int64_t b = 0; b < P; ++b) {
      bstart[b] = pos;
      for (int64_t c = 0; c < nchunks; ++c) {
        cursor[c * P + b] = pos;
        pos += hist[c * P + b];
      }
    }
    bstart[P] = pos;
  }
  // B. stable scatter (scratch buffers are uninitialised: every slot is written before use)
  std::unique_ptr<int64_t[]> pkey(new int64_t[n]), pidx(new int64_t[n]);
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      std::vector<int64_t> cur(cursor.begin() + c * P, cursor.begin() + (c + 1) * P);
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
        const int64_t p = cur[bucket[i]]++;
        pkey[p] = k[i];
        pidx[p] = i;
      }
    }
  });
  // C. per-bucket local tables; voxel records of bucket b at [bstart[b], bstart[b] + nloc[b])
  std::unique_ptr<int32_t[]> local(new int32_t[n]);
  std::unique_ptr<int64_t[]> vfirst(new int64_t[n]), vcount(new int64_t[n]), vbest(new int64_t[select ? n : 1]);
  std::vector<int64_t> nloc(P, 0);
  at::parallel_for(0, P, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> tkey;
    std::vector<int32_t> tval;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = bstart[b], hi = bstart[b + 1];
      int lg = 4;
      while (((int64_t)1 << lg) < 2 * (hi - lo)) ++lg;
      const int64_t cap = (int64_t)1 << lg, mask = cap - 1;
      tkey.assign(cap, POINTINS_HASH_EMPTY);
      tval.resize(cap);
      int32_t nv = 0;
      for (int64_t e = lo; e < hi; ++e) {
        const int64_t key = pkey[e];
        // Fibonacci hashing (the bucket already used the top bits of hash_mix)
        int64_t s = (int64_t)(((uint64_t)key * 0x9e3779b97f4a7c15ull) >> (64 - lg));
        while (tkey[s] != POINTINS_HASH_EMPTY && tkey[s] != key) s = (s + 1) & mask;
        int32_t v;
        if (tkey[s] == POINTINS_HASH_EMPTY) {  // indices ascend within a bucket: the voxel's first point
          tkey[s] = key;
          v = tval[s] = nv++;
          vfirst[lo + v] = pidx[e];
          vcount[lo + v] = 1;
          if (select) vbest[lo + v] = select_pack(sd, pidx[e]);
        } else {
          v = tval[s];
          ++vcount[lo + v];
          if (select) vbest[lo + v] = std::min(vbest[lo + v], select_pack(sd, pidx[e]));
        }
        local[e] = v;
      }
      nloc[b] = nv;
    }
  });
  // D. bitmap of first indices: per-thread private bitmaps (no atomics), OR-reduced
  const int64_t nw = (n + 63) / 64;
  const int nthreads = at::get_num_threads();
  std::vector<std::vector<uint64_t>> priv(nthreads);
  at::parallel_for(0, P, 1, [&](int64_t b0, int64_t b1) {
    auto& bm = priv[at::get_thread_num()];
    if (bm.empty()) bm.assign(nw, 0);
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = 0; r < nloc[b]; ++r) {
        const int64_t f = vfirst[bstart[b] + r];
        bm[f >> 6] |= (uint64_t)1 << (f & 63);
      }
  });
  std::vector<uint64_t> bitmap(nw, 0);
  for (const auto& bm : priv)
    if (!bm.empty())
      for (int64_t w = 0; w < nw; ++w) bitmap[w] |= bm[w];
  std::vector<int64_t> wprefix(nw + 1, 0);
  for (int64_t w = 0; w < nw; ++w) wprefix[w + 1] = wprefix[w] + __builtin_popcountll(bitmap[w]);
  const int64_t nv = wprefix[nw];
  // E. voxel outputs; pkey is reused for each partitioned entry's global voxel id
  auto first = at::empty({nv}, opts), counts = at::empty({nv}, opts), selected = at::empty({nv}, opts);
  auto inverse = at::empty({n}, opts);
  int64_t *fo = first.data_ptr<int64_t>(), *co = counts.data_ptr<int64_t>(), *so = selected.data_ptr<int64_t>();
  int64_t* inv = inverse.data_ptr<int64_t>();
  int64_t* pvid = pkey.get();
  at::parallel_for(0, P, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = bstart[b];
      for (int64_t r = 0; r < nloc[b]; ++r) {
        const int64_t f = vfirst[lo + r];
        const int64_t vid = wprefix[f >> 6] + __builtin_popcountll(bitmap[f >> 6] & (((uint64_t)1 << (f & 63)) - 1));
        fo[vid] = f;
        co[vid] = vcount[lo + r];
        so[vid] = select ? select_index(vbest[lo + r]) : f;
        vfirst[lo + r] = vid;  // reuse: local voxel -> global id
      }
      for (int64_t e = lo; e < bstart[b + 1]; ++e) pvid[e] = vfirst[lo + local[e]];
    }
  });
  // F. inverse in point order
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      std::vector<int64_t> cur(cursor.begin() + c * P, cursor.begin() + (c + 1) * P);
      for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) inv[i] = pvid[cur[bucket[i]]++];
    }
  });
  return {inverse, first, counts, selected};
}

// One seeded random point per voxel given the point -> voxel map: the point of least select_pack(seed, i), exactly
// what voxel_group's selection picks for the same seed (so a cached grouping can be re-drawn cheaply).
at::Tensor voxel_select_cpu(const at::Tensor& inverse_in, int64_t num_voxels, int64_t seed) {
  TORCH_CHECK_VALUE(inverse_in.dim() == 1 && inverse_in.scalar_type() == at::kLong,
                    "pointins.voxel_select: inverse must be a 1-D int64 point -> voxel map, got ",
                    inverse_in.scalar_type(), " ", inverse_in.sizes(), ".");
  check_cpu(inverse_in, "inverse", "voxel_select");
  TORCH_CHECK_VALUE(num_voxels >= 0, "pointins.voxel_select: num_voxels must be >= 0, got ", num_voxels, ".");
  TORCH_CHECK_VALUE(seed >= 0, "pointins.voxel_select: seed must be >= 0, got ", seed, ".");
  auto inverse = inverse_in.contiguous();
  const int64_t n = inverse.numel();
  TORCH_CHECK_VALUE(n < ((int64_t)1 << POINTINS_SELECT_INDEX_BITS), "pointins.voxel_select: at most 2^",
                    POINTINS_SELECT_INDEX_BITS, " points per call, got ", n, ".");
  const int64_t* inv = inverse.data_ptr<int64_t>();
  auto best = at::full({num_voxels}, INT64_MAX, inverse.options());
  int64_t* bp = best.data_ptr<int64_t>();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {  // sequential: voxels of one scene, a few hundred thousand points
    const int64_t v = inv[i];
    if (v < 0 || v >= num_voxels) {
      bad = true;
      break;
    }
    bp[v] = std::min(bp[v], select_pack((uint64_t)seed, i));
  }
  TORCH_CHECK_VALUE(!bad, "pointins.voxel_select: inverse entries must be voxel ids in [0, ", num_voxels, ").");
  at::parallel_for(0, num_voxels, kGrain, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) bp[v] = bp[v] == INT64_MAX ? -1 : select_index(bp[v]);
  });
  return best;
}

at::Tensor kernel_map_cpu(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t kernel_size,
                          int64_t dilation, int64_t bits) {
  check_kernel_map_args(grid_in, batch_in, kernel_size, dilation, bits);
  check_cpu(grid_in, "grid_coord", "kernel_map");
  // Keys are packed (and range-checked) in the input dtype, so an int64 coordinate never wraps.
  const int64_t n = grid_in.size(0), kv = kernel_size * kernel_size * kernel_size;
  auto keys = pack_keys_checked(grid_in, batch_in, bits);
  // Sort-merge instead of hashing: with the keys sorted once, the neighbour keys key + delta_q of
  // offset q are sorted too (delta_q is a constant), so every lookup is a forward step of one of
  // kv merge cursors over the sorted keys: sequential memory access instead of kv random probes.
  // A neighbour outside [0, 2^bits) on some axis is -1 (its key would alias another voxel).
  auto skeys_t = at::empty_like(keys), order_t = at::empty_like(keys);
  stable_argsort_keys(keys.data_ptr<int64_t>(), n, skeys_t.data_ptr<int64_t>(), order_t.data_ptr<int64_t>());
  const int64_t* sk = skeys_t.data_ptr<int64_t>();
  const int64_t* order = order_t.data_ptr<int64_t>();
  auto out = at::empty({n, kv}, keys.options());
  int64_t* o = out.data_ptr<int64_t>();
  const int64_t lim = (int64_t)1 << bits, mask = lim - 1;
  std::vector<int64_t> delta(kv);
  std::vector<int> ox(kv), oy(kv), oz(kv);
  for (int q = 0; q < kv; ++q) {
    kernel_offset(q, (int)kernel_size, (int)dilation, &ox[q], &oy[q], &oz[q]);
    delta[q] = (int64_t)ox[q] * ((int64_t)1 << (2 * bits)) + (int64_t)oy[q] * ((int64_t)1 << bits) + (int64_t)oz[q];
  }
  at::parallel_for(0, n, 4096, [&](int64_t j0, int64_t j1) {
    std::vector<int64_t> cur(kv);
    for (int q = 0; q < kv; ++q) cur[q] = std::lower_bound(sk, sk + n, sk[j0] + delta[q]) - sk;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t key = sk[j];
      const int64_t x = (key >> (2 * bits)) & mask, y = (key >> bits) & mask, z = key & mask;
      int64_t* row = o + order[j] * kv;
      for (int q = 0; q < kv; ++q) {
        const int64_t target = key + delta[q];
        int64_t p = cur[q];
        while (p < n && sk[p] < target) ++p;
        cur[q] = p;
        const int64_t nx = x + ox[q], ny = y + oy[q], nz = z + oz[q];
        const bool inside = nx >= 0 && ny >= 0 && nz >= 0 && nx < lim && ny < lim && nz < lim;
        row[q] = inside && p < n && sk[p] == target ? order[p] : -1;
      }
    }
  });
  return out;
}

// Pairs of a kernel map grouped by offset (offset-major, output rows ascending), in two passes over
// fixed row blocks: count per (block, offset), an exclusive scan in (offset, block) order, then fill. The
// layout depends only on the map, not on the thread count.
std::tuple<at::Tensor, at::Tensor, at::Tensor> kernel_map_pairs_cpu(const at::Tensor& kmap_in) {
  TORCH_CHECK_VALUE(kmap_in.dim() == 2 && kmap_in.scalar_type() == at::kLong,
                    "pointins.kernel_map_pairs: kmap must be a 2-D int64 kernel map, got ", kmap_in.scalar_type(), " ",
                    kmap_in.sizes(), ".");
  check_cpu(kmap_in, "kmap", "kernel_map_pairs");
  auto kmap = kmap_in.contiguous();
  const int64_t m = kmap.size(0), kv = kmap.size(1);
  const int64_t* km = kmap.data_ptr<int64_t>();
  constexpr int64_t kBlock = 8192;
  const int64_t nb = (m + kBlock - 1) / kBlock;
  std::vector<int64_t> cnt(nb * kv, 0);  // cnt[k * nb + b]
  std::atomic<bool> bad{false};
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> c(kv);
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(c.begin(), c.end(), 0);
      for (int64_t i = b * kBlock; i < std::min(m, (b + 1) * kBlock); ++i)
        for (int64_t k = 0; k < kv; ++k) {
          const int64_t v = km[i * kv + k];
          c[k] += v >= 0;
          if (v < -1) bad.store(true, std::memory_order_relaxed);
        }
      for (int64_t k = 0; k < kv; ++k) cnt[k * nb + b] = c[k];
    }
  });
  TORCH_CHECK_VALUE(!bad.load(), "pointins.kernel_map_pairs: kmap entries must be -1 (no neighbour) or row ",
                    "indices >= 0; found a value below -1.");
  auto koff = at::empty({kv + 1}, kmap.options());
  int64_t* ko = koff.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t k = 0; k < kv; ++k) {
    ko[k] = total;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t c = cnt[k * nb + b];
      cnt[k * nb + b] = total;
      total += c;
    }
  }
  ko[kv] = total;
  auto in_idx = at::empty({total}, kmap.options()), out_idx = at::empty({total}, kmap.options());
  int64_t *ii = in_idx.data_ptr<int64_t>(), *oi = out_idx.data_ptr<int64_t>();
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> cur(kv);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t k = 0; k < kv; ++k) cur[k] = cnt[k * nb + b];
      for (int64_t i = b * kBlock; i < std::min(m, (b + 1) * kBlock); ++i)
        for (int64_t k = 0; k < kv; ++k) {
          const int64_t v = km[i * kv + k];
          if (v >= 0) {
            ii[cur[k]] = v;
            oi[cur[k]++] = i;
          }
        }
    }
  });
  return {in_idx, out_idx, koff};
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("hash_build", &pointins::hash_build_cpu);
  m.impl("hash_query", &pointins::hash_query_cpu);
  m.impl("voxel_group", &pointins::voxel_group_cpu);
  m.impl("voxel_select", &pointins::voxel_select_cpu);
  m.impl("kernel_map", &pointins::kernel_map_cpu);
  m.impl("kernel_map_pairs", &pointins::kernel_map_pairs_cpu);
}

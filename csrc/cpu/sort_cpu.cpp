// Stable sort of int64 keys on the CPU: LSD radix sort (11-bit digits, only as many passes as the largest key
// needs, a pass skipped when every key shares its digit), std::stable_sort for negative keys. Serialization
// codes and packed voxel keys are non-negative and use 20-50 bits, so this is 2-5 passes over the keys, several
// times faster than a comparison sort (at::sort) at the sizes the encoder sorts every step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "cpu_common.h"

namespace pointins {

void stable_argsort_keys(const int64_t* keys, int64_t n, int64_t* sorted, int64_t* order) {
  if (n == 0) return;
  int64_t lo = keys[0], hi = keys[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, keys[i]);
    hi = std::max(hi, keys[i]);
  }
  if (lo < 0) {  // not a voxel key or a code: a comparison sort
    std::iota(order, order + n, (int64_t)0);
    std::stable_sort(order, order + n, [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
    for (int64_t i = 0; i < n; ++i) sorted[i] = keys[order[i]];
    return;
  }
  constexpr int kBits = 11;
  constexpr int64_t kBuckets = (int64_t)1 << kBits;
  int bits = 0;
  while (bits < 63 && (hi >> bits) != 0) ++bits;
  std::vector<int64_t> k2(n), i2(n);
  int64_t *ka = sorted, *ia = order, *kb = k2.data(), *ib = i2.data();
  std::copy(keys, keys + n, ka);
  std::iota(ia, ia + n, (int64_t)0);
  std::vector<int64_t> count(kBuckets);
  for (int shift = 0; shift < bits; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++count[(ka[i] >> shift) & (kBuckets - 1)];
    if (*std::max_element(count.begin(), count.end()) == n) continue;  // one digit value: nothing moves
    int64_t pos = 0;
    for (int64_t d = 0; d < kBuckets; ++d) {
      const int64_t c = count[d];
      count[d] = pos;
      pos += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = count[(ka[i] >> shift) & (kBuckets - 1)]++;
      kb[p] = ka[i];
      ib[p] = ia[i];
    }
    std::swap(ka, kb);
    std::swap(ia, ib);
  }
  if (ka != sorted) {
    std::copy(ka, ka + n, sorted);
    std::copy(ia, ia + n, order);
  }
}

namespace {

// keys (N,) or (R, N) int64 -> (sorted, order) per row, stable (equal keys keep their order).
std::tuple<at::Tensor, at::Tensor> sort_keys_cpu(const at::Tensor& keys_in) {
  TORCH_CHECK_VALUE((keys_in.dim() == 1 || keys_in.dim() == 2) && keys_in.scalar_type() == at::kLong,
                    "pointins.sort_keys: keys must be a 1-D or 2-D int64 tensor, got ", keys_in.scalar_type(), " ",
                    keys_in.sizes(), ".");
  check_cpu(keys_in, "keys", "sort_keys");
  auto keys = keys_in.contiguous();
  const int64_t rows = keys.dim() == 1 ? 1 : keys.size(0), n = keys.size(-1);
  auto sorted = at::empty_like(keys), order = at::empty_like(keys);
  const int64_t* k = keys.data_ptr<int64_t>();
  int64_t *s = sorted.data_ptr<int64_t>(), *o = order.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) stable_argsort_keys(k + r * n, n, s + r * n, o + r * n);
  });
  return {sorted, order};
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) { m.impl("sort_keys", &pointins::sort_keys_cpu); }

// Helpers shared by the CPU implementations (csrc/cpu/*.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <tuple>

namespace pointins {

inline void check_cpu(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "pointins.", op, ": ", name, " is on ", t.device(),
                    "; this is the CPU implementation.");
}

// Runs flags_of(i) for i in [0, n) on torch's OpenMP pool and returns the OR of the returned
// POINTINS_FLAG_* bits (kernels never throw mid-loop; the caller raises one clear error).
template <typename F>
int parallel_flags(int64_t n, int64_t grain, const F& flags_of) {
  std::atomic<int> flags{0};
  at::parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) {
    int acc = 0;
    for (int64_t i = i0; i < i1; ++i) acc |= flags_of(i);
    if (acc) flags.fetch_or(acc, std::memory_order_relaxed);
  });
  return flags.load();
}

// Decodes n int64 codes into (grid_coord (n, 3) int32, batch (n,) int64) with
// decode_one(code, &x, &y, &z, &batch) -> flags. Returns the tensors and the OR of the flags.
template <typename F>
std::tuple<at::Tensor, at::Tensor, int> decode_points(const at::Tensor& codes, int64_t grain, const F& decode_one) {
  const int64_t n = codes.size(0);
  auto grid = at::empty({n, 3}, codes.options().dtype(at::kInt));
  auto batch = at::empty({n}, codes.options());
  const int64_t* c = codes.data_ptr<int64_t>();
  int32_t* g = grid.data_ptr<int32_t>();
  int64_t* b = batch.data_ptr<int64_t>();
  const int flags = parallel_flags(n, grain, [&](int64_t i) {
    return decode_one(c[i], &g[3 * i], &g[3 * i + 1], &g[3 * i + 2], &b[i]);
  });
  return {grid, batch, flags};
}

// Packed keys of (N, 3) int32/int64 grid coordinates (csrc/cpu/keys_cpu.cpp): validated, raising
// the pack_keys error on bad input. Shared by pack_keys and kernel_map.
at::Tensor pack_keys_checked(const at::Tensor& grid, const c10::optional<at::Tensor>& batch, int64_t bits);

// Stable argsort of n int64 keys (csrc/cpu/sort_cpu.cpp): sorted keys and the permutation (radix sort for
// non-negative keys). Sequential: callers parallelise over independent rows.
void stable_argsort_keys(const int64_t* keys, int64_t n, int64_t* sorted, int64_t* order);

}  // namespace pointins

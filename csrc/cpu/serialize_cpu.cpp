// CPU implementations of serialize_encode / serialize_decode / patch_partition.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/patch.h"
#include "pointins/serialize.h"

namespace pointins {
namespace {

constexpr int64_t kGrain = 1 << 13;

at::Tensor serialize_encode_cpu(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t depth,
                                at::IntArrayRef orders) {
  check_serialize_args(grid_in, batch_in, depth, orders);
  check_cpu(grid_in, "grid_coord", "serialize");
  auto grid = grid_in.contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid.size(0), no = (int64_t)orders.size();
  auto codes = at::empty({no, n}, grid.options().dtype(at::kLong));
  int64_t* c = codes.data_ptr<int64_t>();
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  std::vector<int> ord(orders.begin(), orders.end());
  int flags = 0;
  AT_DISPATCH_INDEX_TYPES(grid.scalar_type(), "pointins_serialize_encode_cpu", [&] {
    const index_t* g = grid.data_ptr<index_t>();
    for (int64_t o = 0; o < no; ++o)  // one pass per order: each writes one contiguous row
      flags |= parallel_flags(n, kGrain, [&](int64_t i) {
        return serialize_encode_one<index_t>(g[3 * i], g[3 * i + 1], g[3 * i + 2], b ? b[i] : 0, (int)depth, ord[o],
                                             &c[o * n + i]);
      });
  });
  if (flags) raise_serialize_error(flags, grid, batch_in, depth);
  return codes;
}

std::tuple<at::Tensor, at::Tensor> serialize_decode_cpu(const at::Tensor& code_in, int64_t depth, int64_t order) {
  check_keys_tensor(code_in, "code", "deserialize");
  check_depth_order(depth, order, "deserialize");
  auto code = code_in.contiguous();
  auto [grid, batch, flags] =
      decode_points(code, kGrain, [depth, order](int64_t c, int32_t* x, int32_t* y, int32_t* z, int64_t* bt) {
        return serialize_decode_one(c, (int)depth, (int)order, x, y, z, bt);
      });
  if (flags)
    TORCH_CHECK_VALUE(false, "pointins.deserialize: code contains ", code.lt(0).sum().item<int64_t>(),
                      " negative values, which no serialization produces.");
  return {grid, batch};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_partition_cpu(const at::Tensor& offsets, int64_t patch_size) {
  TORCH_CHECK_VALUE(patch_size >= 1, "pointins.patch_partition: patch_size must be >= 1, got ", patch_size, ".");
  const auto off = host_offsets(offsets, -1, "patch_partition");
  const auto opad = padded_offsets(off, patch_size);
  const int64_t ns = (int64_t)off.size() - 1, n = off.back(), total = opad.back();
  auto opts = offsets.options().dtype(at::kLong);
  auto pad = at::empty({total}, opts);
  auto unpad = at::empty({n}, opts);
  int64_t* pd = pad.data_ptr<int64_t>();
  int64_t* up = unpad.data_ptr<int64_t>();
  std::vector<int32_t> cu;
  for (int64_t s = 0; s < ns; ++s) {
    const int64_t cnt = off[s + 1] - off[s], np = opad[s + 1] - opad[s];
    for (int64_t j = 0; j < np; j += patch_size) cu.push_back((int32_t)(opad[s] + j));
  }
  TORCH_CHECK_VALUE(total < INT32_MAX, "pointins.patch_partition: ", total,
                    " padded points overflow the int32 cu_seqlens of varlen attention; split the batch.");
  cu.push_back((int32_t)total);
  at::parallel_for(0, ns, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t cnt = off[s + 1] - off[s], np = opad[s + 1] - opad[s];
      for (int64_t j = 0; j < np; ++j) pd[opad[s] + j] = off[s] + pad_source(j, cnt, patch_size);
      for (int64_t p = 0; p < cnt; ++p) up[off[s] + p] = opad[s] + p;
    }
  });
  auto cu_t = at::empty({(int64_t)cu.size()}, offsets.options().dtype(at::kInt));
  std::copy(cu.begin(), cu.end(), cu_t.data_ptr<int32_t>());
  return {pad, unpad, cu_t};
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("serialize_encode", &pointins::serialize_encode_cpu);
  m.impl("serialize_decode", &pointins::serialize_decode_cpu);
  m.impl("patch_partition", &pointins::patch_partition_cpu);
}

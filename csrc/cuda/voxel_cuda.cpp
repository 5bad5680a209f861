// CUDA dispatch glue for the hash table, voxel grouping / selection and kernel maps. The
// exclusive scan of voxel grouping is ATen's cumsum (the C API leaves the scan to the caller).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/hash.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

std::tuple<at::Tensor, at::Tensor> new_table(const at::Tensor& like, int64_t cap) {
  auto tk = at::empty({cap}, like.options().dtype(at::kLong));
  auto tv = at::empty({cap}, like.options().dtype(at::kLong));
  check_launch(pointins_hash_init(tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), cap, current_stream()), "HashTable");
  return {tk, tv};
}

// Inserts keys; raises on negative keys. slots may be undefined.
void insert(const at::Tensor& keys, at::Tensor& tk, at::Tensor& tv, int64_t* slots, const char* op) {
  auto flags = new_flags(keys);
  check_launch(pointins_hash_insert(keys.data_ptr<int64_t>(), keys.numel(), tk.data_ptr<int64_t>(),
                                    tv.data_ptr<int64_t>(), tk.numel(), slots, flags.data_ptr<int32_t>(),
                                    current_stream()),
               op);
  if (read_flags(flags)) raise_negative_keys(keys, op);
}

std::tuple<at::Tensor, at::Tensor> hash_build_cuda(const at::Tensor& keys_in, int64_t capacity) {
  check_keys_tensor(keys_in, "keys", "HashTable");
  check_cuda_tensor(keys_in, "keys", "HashTable");
  const c10::cuda::CUDAGuard guard(keys_in.device());
  auto keys = keys_in.contiguous();
  TORCH_CHECK_VALUE(capacity > keys.numel() && (capacity & (capacity - 1)) == 0,
                    "pointins.HashTable: capacity must be a power of two larger than the number of keys (",
                    keys.numel(), "), got ", capacity, ".");
  auto [tk, tv] = new_table(keys, capacity);
  insert(keys, tk, tv, nullptr, "HashTable");
  return {tk, tv};
}

at::Tensor hash_query_cuda(const at::Tensor& tk_in, const at::Tensor& tv_in, const at::Tensor& q_in) {
  check_table(tk_in, tv_in, "HashTable.query");
  check_keys_tensor(q_in, "queries", "HashTable.query");
  check_cuda_tensor(q_in, "queries", "HashTable.query");
  check_same_device(tk_in, "table_keys", q_in, "queries", "HashTable.query");
  const c10::cuda::CUDAGuard guard(q_in.device());
  auto tk = tk_in.contiguous(), tv = tv_in.contiguous(), q = q_in.contiguous();
  auto out = at::empty({q.numel()}, q.options());
  check_launch(pointins_hash_query(tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), tk.numel(), q.data_ptr<int64_t>(),
                                   q.numel(), out.data_ptr<int64_t>(), current_stream()),
               "HashTable.query");
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_group_cuda(const at::Tensor& keys_in,
                                                                            c10::optional<int64_t> seed) {
  check_keys_tensor(keys_in, "keys", "voxelize");
  check_cuda_tensor(keys_in, "keys", "voxelize");
  const c10::cuda::CUDAGuard guard(keys_in.device());
  auto keys = keys_in.contiguous();
  const int64_t n = keys.numel();
  TORCH_CHECK_VALUE(n < ((int64_t)1 << POINTINS_SELECT_INDEX_BITS), "pointins.voxelize: at most 2^",
                    POINTINS_SELECT_INDEX_BITS, " points per call, got ", n, ".");
  auto [tk, tv] = new_table(keys, hash_capacity_for(n));
  auto inverse = at::empty({n}, keys.options());  // slots first, voxel ids after assign
  insert(keys, tk, tv, inverse.data_ptr<int64_t>(), "voxelize");
  if (n == 0) return {inverse, keys.new_empty({0}), keys.new_empty({0}), keys.new_empty({0})};
  auto is_first = at::empty({n}, keys.options());
  check_launch(pointins_voxel_mark(tv.data_ptr<int64_t>(), inverse.data_ptr<int64_t>(), n,
                                   is_first.data_ptr<int64_t>(), current_stream()),
               "voxelize");
  auto rank = at::cumsum(is_first, 0) - is_first;
  const int64_t nv = (rank[-1] + is_first[-1]).item<int64_t>();
  auto first = at::empty({nv}, keys.options());
  auto counts = at::zeros({nv}, keys.options());
  check_launch(pointins_voxel_assign(tv.data_ptr<int64_t>(), rank.data_ptr<int64_t>(), n, inverse.data_ptr<int64_t>(),
                                     first.data_ptr<int64_t>(), counts.data_ptr<int64_t>(), current_stream()),
               "voxelize");
  if (!seed.has_value()) return {inverse, first, counts, first.clone()};
  auto selected = at::empty({nv}, keys.options());
  auto flags = new_flags(keys);
  check_launch(pointins_voxel_select(inverse.data_ptr<int64_t>(), n, nv, (uint64_t)*seed,
                                     selected.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream()),
               "voxelize");
  return {inverse, first, counts, selected};
}

at::Tensor kernel_map_cuda(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t kernel_size,
                           int64_t dilation, int64_t bits) {
  check_kernel_map_args(grid_in, batch_in, kernel_size, dilation, bits);
  check_cuda_tensor(grid_in, "grid_coord", "kernel_map");
  const c10::cuda::CUDAGuard guard(grid_in.device());
  // Pack (and range-check) in the input dtype before narrowing to int32 (no silent wrap).
  auto grid_orig = grid_in.contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid_orig.size(0), kv = kernel_size * kernel_size * kernel_size;
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  auto keys = at::empty({n}, grid_orig.options().dtype(at::kLong));
  auto flags = new_flags(grid_orig);
  const int err = grid_orig.scalar_type() == at::kInt
                      ? pointins_pack_keys_i32(grid_orig.data_ptr<int32_t>(), b, n, (int)bits,
                                               keys.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream())
                      : pointins_pack_keys_i64(grid_orig.data_ptr<int64_t>(), b, n, (int)bits,
                                               keys.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream());
  check_launch(err, "kernel_map");
  const int f = read_flags(flags);
  if (f) raise_pack_error(f, grid_orig, batch_in, bits);
  auto grid = grid_orig.to(at::kInt);
  auto [tk, tv] = new_table(keys, hash_capacity_for(n));
  insert(keys, tk, tv, nullptr, "kernel_map");
  auto out = at::empty({n, kv}, keys.options());
  check_launch(pointins_kernel_map(grid.data_ptr<int32_t>(), b, n, (int)bits, (int)kernel_size, (int)dilation,
                                   tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), tk.numel(),
                                   out.data_ptr<int64_t>(), current_stream()),
               "kernel_map");
  return out;
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CUDA, m) {
  m.impl("hash_build", &pointins::hash_build_cuda);
  m.impl("hash_query", &pointins::hash_query_cuda);
  m.impl("voxel_group", &pointins::voxel_group_cuda);
  m.impl("kernel_map", &pointins::kernel_map_cuda);
}

// CUDA dispatch glue for serialize_encode / serialize_decode / patch_partition.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

at::Tensor serialize_encode_cuda(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t depth,
                                 at::IntArrayRef orders) {
  check_serialize_args(grid_in, batch_in, depth, orders);
  check_cuda_tensor(grid_in, "grid_coord", "serialize");
  const c10::cuda::CUDAGuard guard(grid_in.device());
  auto grid = grid_in.contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid.size(0);
  auto codes = at::empty({(int64_t)orders.size(), n}, grid.options().dtype(at::kLong));
  auto flags = new_flags(grid);
  std::vector<int32_t> ord(orders.begin(), orders.end());
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  int err;
  if (grid.scalar_type() == at::kInt)
    err = pointins_serialize_encode_i32(grid.data_ptr<int32_t>(), b, n, (int)depth, ord.data(), (int)ord.size(),
                                        codes.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream());
  else
    err = pointins_serialize_encode_i64(grid.data_ptr<int64_t>(), b, n, (int)depth, ord.data(), (int)ord.size(),
                                        codes.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream());
  check_launch(err, "serialize");
  const int f = read_flags(flags);
  if (f) raise_serialize_error(f, grid, batch_in, depth);
  return codes;
}

std::tuple<at::Tensor, at::Tensor> serialize_decode_cuda(const at::Tensor& code_in, int64_t depth, int64_t order) {
  check_keys_tensor(code_in, "code", "deserialize");
  check_depth_order(depth, order, "deserialize");
  check_cuda_tensor(code_in, "code", "deserialize");
  const c10::cuda::CUDAGuard guard(code_in.device());
  auto code = code_in.contiguous();
  const int64_t n = code.size(0);
  auto grid = at::empty({n, 3}, code.options().dtype(at::kInt));
  auto batch = at::empty({n}, code.options());
  auto flags = new_flags(code);
  check_launch(pointins_serialize_decode(code.data_ptr<int64_t>(), n, (int)depth, (int)order, grid.data_ptr<int32_t>(),
                                         batch.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), current_stream()),
               "deserialize");
  if (read_flags(flags))
    TORCH_CHECK_VALUE(false, "pointins.deserialize: code contains ", code.lt(0).sum().item<int64_t>(),
                      " negative values, which no serialization produces.");
  return {grid, batch};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_partition_cuda(const at::Tensor& offsets_in, int64_t patch_size) {
  TORCH_CHECK_VALUE(patch_size >= 1, "pointins.patch_partition: patch_size must be >= 1, got ", patch_size, ".");
  check_cuda_tensor(offsets_in, "offsets", "patch_partition");
  const c10::cuda::CUDAGuard guard(offsets_in.device());
  const auto off = host_offsets(offsets_in, -1, "patch_partition");  // small: B+1 values
  const auto opad = padded_offsets(off, patch_size);
  const int64_t ns = (int64_t)off.size() - 1, n = off.back(), total = opad.back();
  TORCH_CHECK_VALUE(total < INT32_MAX, "pointins.patch_partition: ", total,
                    " padded points overflow the int32 cu_seqlens of varlen attention; split the batch.");
  std::vector<int32_t> cu;
  for (int64_t s = 0; s < ns; ++s)
    for (int64_t j = 0; j < opad[s + 1] - opad[s]; j += patch_size) cu.push_back((int32_t)(opad[s] + j));
  cu.push_back((int32_t)total);
  auto cpu_long = at::TensorOptions().dtype(at::kLong);
  auto offsets = offsets_in.contiguous();
  auto offsets_pad = at::from_blob((void*)opad.data(), {(int64_t)opad.size()}, cpu_long).to(offsets.device());
  auto pad = at::empty({total}, offsets.options());
  auto unpad = at::empty({n}, offsets.options());
  check_launch(pointins_patch_partition(offsets.data_ptr<int64_t>(), offsets_pad.data_ptr<int64_t>(), ns, n, total,
                                        patch_size, pad.data_ptr<int64_t>(), unpad.data_ptr<int64_t>(),
                                        current_stream()),
               "patch_partition");
  auto cu_t = at::from_blob(cu.data(), {(int64_t)cu.size()}, at::TensorOptions().dtype(at::kInt)).to(offsets.device());
  return {pad, unpad, cu_t};
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CUDA, m) {
  m.impl("serialize_encode", &pointins::serialize_encode_cuda);
  m.impl("serialize_decode", &pointins::serialize_decode_cuda);
  m.impl("patch_partition", &pointins::patch_partition_cuda);
}

// CUDA dispatch glue for grid_coord, pack_keys, unpack_keys: validates tensors, calls the
// framework-free launchers of kernels/keys.cu on the current stream, turns flags into errors.
// Compiled by the host compiler (no nvcc), only when torch has CUDA.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

at::Tensor grid_coord_cuda(const at::Tensor& coord_in, const at::Tensor& offsets_in,
                           at::ArrayRef<double> grid_size) {
  check_grid_coord_args(coord_in, offsets_in, grid_size);
  check_cuda_tensor(coord_in, "coord", "grid_coord");
  const c10::cuda::CUDAGuard guard(coord_in.device());
  auto coord = coord_in.contiguous();
  auto offsets = offsets_in.contiguous();
  const int64_t n = coord.size(0), num_samples = offsets.numel() - 1;
  auto out = at::empty({n, 3}, coord.options().dtype(at::kInt));
  auto workspace = at::empty({pointins_grid_coord_workspace_size(num_samples)},
                             coord.options().dtype(at::kByte));
  auto flags = at::zeros({1}, coord.options().dtype(at::kInt));
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  int err;
  if (coord.scalar_type() == at::kFloat) {
    err = pointins_grid_coord_f32(coord.data_ptr<float>(), offsets.data_ptr<int64_t>(),
                                  num_samples, n, (float)grid_size[0], (float)grid_size[1],
                                  (float)grid_size[2], out.data_ptr<int32_t>(),
                                  workspace.data_ptr(), flags.data_ptr<int32_t>(), stream);
  } else {
    err = pointins_grid_coord_f64(coord.data_ptr<double>(), offsets.data_ptr<int64_t>(),
                                  num_samples, n, grid_size[0], grid_size[1], grid_size[2],
                                  out.data_ptr<int32_t>(), workspace.data_ptr(),
                                  flags.data_ptr<int32_t>(), stream);
  }
  check_launch(err, "grid_coord");
  const int f = read_flags(flags);
  if (f) raise_grid_coord_error(f, coord, offsets, grid_size);
  return out;
}

at::Tensor pack_keys_cuda(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in,
                          int64_t bits) {
  check_pack_args(grid_in, batch_in, bits);
  check_cuda_tensor(grid_in, "grid_coord", "pack_keys");
  const c10::cuda::CUDAGuard guard(grid_in.device());
  auto grid = grid_in.contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid.size(0);
  auto keys = at::empty({n}, grid.options().dtype(at::kLong));
  auto flags = at::zeros({1}, grid.options().dtype(at::kInt));
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  int err;
  if (grid.scalar_type() == at::kInt) {
    err = pointins_pack_keys_i32(grid.data_ptr<int32_t>(), b, n, (int)bits,
                                 keys.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), stream);
  } else {
    err = pointins_pack_keys_i64(grid.data_ptr<int64_t>(), b, n, (int)bits,
                                 keys.data_ptr<int64_t>(), flags.data_ptr<int32_t>(), stream);
  }
  check_launch(err, "pack_keys");
  const int f = read_flags(flags);
  if (f) raise_pack_error(f, grid, batch_in, bits);
  return keys;
}

std::tuple<at::Tensor, at::Tensor> unpack_keys_cuda(const at::Tensor& keys_in, int64_t bits) {
  check_unpack_args(keys_in, bits);
  check_cuda_tensor(keys_in, "keys", "unpack_keys");
  const c10::cuda::CUDAGuard guard(keys_in.device());
  auto keys = keys_in.contiguous();
  const int64_t n = keys.size(0);
  auto grid = at::empty({n, 3}, keys.options().dtype(at::kInt));
  auto batch = at::empty({n}, keys.options());
  auto flags = at::zeros({1}, keys.options().dtype(at::kInt));
  const int err = pointins_unpack_keys(keys.data_ptr<int64_t>(), n, (int)bits,
                                       grid.data_ptr<int32_t>(), batch.data_ptr<int64_t>(),
                                       flags.data_ptr<int32_t>(),
                                       c10::cuda::getCurrentCUDAStream().stream());
  check_launch(err, "unpack_keys");
  const int f = read_flags(flags);
  if (f) raise_unpack_error(f, keys, bits);
  return {grid, batch};
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CUDA, m) {
  m.impl("grid_coord", &pointins::grid_coord_cuda);
  m.impl("pack_keys", &pointins::pack_keys_cuda);
  m.impl("unpack_keys", &pointins::unpack_keys_cuda);
}

// CUDA dispatch glue for the radius-graph connected components (kernels/components.cu). ATen
// does the stable sort of the cell keys and the cell boundaries; hashing is kernels/hash.cu.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <climits>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/components.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

at::Tensor radius_components_cuda(const at::Tensor& coord_in, const at::Tensor& group_in, double radius) {
  check_components_args(coord_in, group_in, radius);
  check_cuda_tensor(coord_in, "coord", "connected_components");
  const c10::cuda::CUDAGuard guard(coord_in.device());
  const char* op = "connected_components";
  auto coord = coord_in.contiguous();
  auto group = group_in.contiguous();
  const int64_t n = coord.size(0);
  const int dtype = dtype_code(coord);
  auto root = at::full({n}, -1, group.options());
  auto valid = group.ge(0);
  const int64_t n_valid = valid.sum().item<int64_t>();
  if (n_valid == 0) return root;
  auto cells = at::empty({n, 3}, group.options());
  auto flags = new_flags(group);
  check_launch(pointins_cc_cells(dtype, coord.data_ptr(), group.data_ptr<int64_t>(), n,
                                 radius * POINTINS_CC_CELL_FACTOR, cells.data_ptr<int64_t>(), flags.data_ptr<int32_t>(),
                                 current_stream()),
               op);
  const int f = read_flags(flags);
  if (f) raise_components_error(f, coord, group, radius, 0);
  auto vc = cells.index({valid});
  auto lo = std::get<0>(vc.min(0)).cpu(), hi = std::get<0>(vc.max(0)).cpu();
  const int64_t gmax = group.max().item<int64_t>();
  int64_t span = 0;
  for (int a = 0; a < 3; ++a) span = std::max(span, hi[a].item<int64_t>() - lo[a].item<int64_t>() + 2 * POINTINS_CC_REACH);
  int bits = 1;
  while (bits < 63 && ((int64_t)1 << bits) <= span) ++bits;
  if (bits > POINTINS_MAX_KEY_BITS || (gmax >> (63 - 3 * bits)) != 0)
    raise_components_error(POINTINS_FLAG_OVERFLOW, coord, group, radius, bits);
  auto keys = at::empty({n}, group.options());
  check_launch(pointins_cc_keys(cells.data_ptr<int64_t>(), group.data_ptr<int64_t>(), n, lo[0].item<int64_t>(),
                                lo[1].item<int64_t>(), lo[2].item<int64_t>(), bits, keys.data_ptr<int64_t>(),
                                current_stream()),
               op);
  auto [sorted, order] = at::sort(keys, /*stable=*/true, 0, false);
  auto head = sorted.slice(0, 0, n_valid);
  auto boundary = at::ones({n_valid}, valid.options());
  if (n_valid > 1) boundary.slice(0, 1).copy_(head.slice(0, 1).ne(head.slice(0, 0, n_valid - 1)));
  auto cell_of_pos = boundary.to(at::kLong).cumsum(0).sub_(1);
  auto start = at::cat({boundary.nonzero().flatten(), at::full({1}, n_valid, group.options())});
  const int64_t m = start.numel() - 1;
  auto cell_keys = head.index_select(0, start.slice(0, 0, m));
  const int64_t cap = hash_capacity_for(m);
  auto tk = at::empty({cap}, group.options()), tv = at::empty({cap}, group.options());
  auto hflags = new_flags(group);
  check_launch(pointins_hash_init(tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), cap, current_stream()), op);
  check_launch(pointins_hash_insert(cell_keys.data_ptr<int64_t>(), m, tk.data_ptr<int64_t>(), tv.data_ptr<int64_t>(), cap,
                                    nullptr, hflags.data_ptr<int32_t>(), current_stream()),
               op);
  check_launch(pointins_cc_init_parent(order.data_ptr<int64_t>(), cell_of_pos.data_ptr<int64_t>(),
                                       start.data_ptr<int64_t>(), n_valid, root.data_ptr<int64_t>(), current_stream()),
               op);
  check_launch(pointins_cc_link(dtype, coord.data_ptr(), order.data_ptr<int64_t>(), sorted.data_ptr<int64_t>(),
                                start.data_ptr<int64_t>(), m, bits, radius, tk.data_ptr<int64_t>(),
                                tv.data_ptr<int64_t>(), cap, root.data_ptr<int64_t>(), current_stream()),
               op);
  check_launch(pointins_cc_finalize(group.data_ptr<int64_t>(), n, root.data_ptr<int64_t>(), current_stream()), op);
  return root;
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CUDA, m) { m.impl("radius_components", &radius_components_cuda); }

}  // namespace pointins

// CUDA dispatch glue for the segment reductions. The stable sort of the index path is ATen's
// (CUB radix sort); everything else is kernels/segment.cu through the C API.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

std::tuple<at::Tensor, at::Tensor> segment_index_csr_cuda(const at::Tensor& index_in, int64_t num_segments) {
  check_segment_index_args(index_in, num_segments);
  check_cuda_tensor(index_in, "index", "segment_reduce");
  const c10::cuda::CUDAGuard guard(index_in.device());
  auto index = index_in.contiguous();
  const int64_t n = index.numel();
  auto keys = at::empty({n}, index.options());
  auto flags = new_flags(index);
  check_launch(pointins_segment_keys(index.data_ptr<int64_t>(), n, num_segments, keys.data_ptr<int64_t>(),
                                     flags.data_ptr<int32_t>(), current_stream()),
               "segment_reduce");
  if (read_flags(flags)) raise_segment_index_range(index, num_segments);
  auto [sorted, perm] = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto offsets = at::empty({num_segments + 1}, index.options());
  check_launch(pointins_segment_offsets_from_sorted(sorted.data_ptr<int64_t>(), n, num_segments,
                                                    offsets.data_ptr<int64_t>(), current_stream()),
               "segment_reduce");
  return {perm, offsets};
}

std::tuple<at::Tensor, at::Tensor> segment_csr_cuda(const at::Tensor& src_in, const at::Tensor& offsets_in,
                                                    const c10::optional<at::Tensor>& perm_in,
                                                    c10::string_view reduce_name, int64_t correction,
                                                    bool with_arg) {
  (void)with_arg;  // the kernels always record the argument of max/min here (aux is never empty for them)
  const int reduce = check_segment_csr_args(src_in, offsets_in, perm_in, reduce_name, correction);
  check_cuda_tensor(src_in, "src", "segment_reduce");
  const c10::cuda::CUDAGuard guard(src_in.device());
  auto src = src_in.contiguous();
  auto offsets = offsets_in.contiguous();
  at::Tensor perm = perm_in.has_value() ? perm_in->contiguous() : at::Tensor();
  const int64_t n = src.size(0), C = src.size(1), S = offsets.numel() - 1;
  auto out = at::empty({S, C}, src.options());
  at::Tensor aux = segment_aux(reduce, S, src);
  const int64_t ws_bytes = pointins_segment_csr_workspace_size(n, C, S);
  auto ws = at::empty({ws_bytes}, src.options().dtype(at::kByte));
  auto flags = new_flags(offsets);
  check_launch(pointins_segment_csr(dtype_code(src), src.data_ptr(), n, C, offsets.data_ptr<int64_t>(), S,
                                    perm.defined() ? perm.data_ptr<int64_t>() : nullptr, reduce, (int)correction,
                                    out.data_ptr(), aux.scalar_type() == at::kLong ? aux.data_ptr<int64_t>() : nullptr,
                                    reduce == POINTINS_REDUCE_VAR ? aux.data_ptr() : nullptr,
                                    ws_bytes ? ws.data_ptr() : nullptr, flags.data_ptr<int32_t>(), current_stream()),
               "segment_reduce");
  if (read_flags(flags)) raise_segment_offsets_error(offsets, n, perm.defined());
  return {out, aux};
}

std::tuple<at::Tensor, at::Tensor> segment_coo_cuda(const at::Tensor& src, const at::Tensor& index,
                                                    int64_t num_segments, c10::string_view reduce, int64_t correction,
                                                    bool with_arg) {
  check_segment_coo_args(src, index, num_segments);
  auto [perm, offsets] = segment_index_csr_cuda(index, num_segments);  // stable radix sort: deterministic
  return segment_csr_cuda(src, offsets, perm, reduce, correction, with_arg);
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CUDA, m) {
  m.impl("segment_index_csr", &segment_index_csr_cuda);
  m.impl("segment_csr", &segment_csr_cuda);
  m.impl("segment_coo", &segment_coo_cuda);
}

}  // namespace pointins

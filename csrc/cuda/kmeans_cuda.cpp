// CUDA dispatch glue for the K-means steps (kernels/kmeans.cu). No host synchronisation: the
// Lloyd loop in pointins/ops/cluster.py keeps every step on the device.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_common.h"
#include "pointins/pointins_kernels.h"

namespace pointins {
namespace {

const uint8_t* bool_ptr(const at::Tensor& t) { return reinterpret_cast<const uint8_t*>(t.data_ptr<bool>()); }

at::Tensor kmeans_init_cuda(const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, int64_t method,
                            int64_t seed, int64_t local_trials) {
  check_kmeans_args(x_in, offsets, coff, "kmeans");
  check_cuda_tensor(x_in, "x", "kmeans");
  TORCH_CHECK_VALUE(method == POINTINS_KMEANS_PLUSPLUS || method == POINTINS_KMEANS_RANDOM,
                    "pointins.kmeans: unknown init method ", method, ".");
  TORCH_CHECK_VALUE(local_trials >= 0 && local_trials <= 1024, "pointins.kmeans: local_trials must be in [0, 1024] ",
                    "(0: 2 + floor(ln k)), got ", local_trials, ".");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous();
  auto off = offsets.contiguous(), co = coff.contiguous();
  // One copy to the host (one sync, before the Lloyd loop) gives the output size and the same set checks as
  // the CPU op: k_b above a set's size would make the init kernels write past the set's workspace rows.
  const int64_t B = off.numel() - 1;
  auto host = at::cat({off, co}).to(at::kCPU);
  const int64_t* h = host.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(co.numel() == off.numel(), "pointins.kmeans: coff must have one entry per set offset (",
                    off.numel(), "), got ", co.numel(), ".");
  check_kmeans_sets(h, h + B + 1, B, x.size(0), "kmeans");
  const int64_t K = h[2 * B + 1];
  auto cen = at::empty({K, x.size(1)}, x.options());
  auto ws = at::empty({std::max<int64_t>(x.size(0), 1)}, x.options().dtype(at::kDouble));
  check_launch(pointins_kmeans_init(dtype_code(x), x.data_ptr(), x.size(0), x.size(1), off.data_ptr<int64_t>(),
                                    co.data_ptr<int64_t>(), off.numel() - 1, (uint64_t)seed, (int)method, local_trials,
                                    ws.data_ptr<double>(), cen.data_ptr(), current_stream()),
               "kmeans");
  return cen;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_assign_cuda(
    const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, const at::Tensor& cen_in,
    const c10::optional<at::Tensor>& converged, bool accumulate, c10::optional<int64_t> max_k) {
  check_kmeans_args(x_in, offsets, coff, "kmeans");
  check_kmeans_centroids(x_in, cen_in, coff, converged, "kmeans");
  check_cuda_tensor(x_in, "x", "kmeans");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), cen = cen_in.contiguous();
  auto off = offsets.contiguous(), co = coff.contiguous();
  const int64_t n = x.size(0), D = x.size(1), K = cen.size(0);
  at::Tensor conv;
  if (converged.has_value()) conv = converged->to(at::kBool).contiguous();
  const int64_t mk = max_k.has_value() ? *max_k : (co.numel() > 1 ? co.diff().max().item<int64_t>() : 0);
  auto labels = at::empty({n}, off.options());
  auto dist = at::empty({n}, x.options());
  auto sums = at::zeros({accumulate ? K : 0, D}, x.options());
  auto counts = at::zeros({accumulate ? K : 0}, off.options());
  check_launch(pointins_kmeans_assign(dtype_code(x), x.data_ptr(), n, D, off.data_ptr<int64_t>(), co.data_ptr<int64_t>(),
                                      off.numel() - 1, mk, cen.data_ptr(), conv.defined() ? bool_ptr(conv) : nullptr,
                                      accumulate ? 1 : 0, labels.data_ptr<int64_t>(), dist.data_ptr(),
                                      accumulate ? sums.data_ptr() : nullptr,
                                      accumulate ? counts.data_ptr<int64_t>() : nullptr, current_stream()),
               "kmeans");
  return {labels, dist, sums, counts};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kmeans_update_cuda(
    const at::Tensor& x_in, const at::Tensor& offsets, const at::Tensor& coff, const at::Tensor& labels_in,
    const at::Tensor& dist_in, const at::Tensor& sums_in, const at::Tensor& counts_in, const at::Tensor& cen_in,
    const c10::optional<at::Tensor>& tol_in, const at::Tensor& converged_in, const at::Tensor& n_iter_in,
    bool spherical) {
  check_kmeans_update_args(x_in, offsets, coff, cen_in, sums_in, counts_in, converged_in);
  check_cuda_tensor(x_in, "x", "kmeans");
  const c10::cuda::CUDAGuard guard(x_in.device());
  auto x = x_in.contiguous(), labels = labels_in.contiguous();
  auto off = offsets.contiguous(), co = coff.contiguous();
  auto dist = dist_in.clone(at::MemoryFormat::Contiguous);
  auto sums = sums_in.to(x.scalar_type()).clone(at::MemoryFormat::Contiguous);
  auto counts = counts_in.clone(at::MemoryFormat::Contiguous);
  auto cen = cen_in.clone(at::MemoryFormat::Contiguous);
  auto conv = converged_in.to(at::kBool).clone(at::MemoryFormat::Contiguous);
  auto n_iter = n_iter_in.clone(at::MemoryFormat::Contiguous);
  at::Tensor tol;
  if (tol_in.has_value()) tol = tol_in->to(at::kDouble).contiguous();
  check_launch(pointins_kmeans_update(dtype_code(x), x.data_ptr(), x.size(1), off.data_ptr<int64_t>(),
                                      co.data_ptr<int64_t>(), off.numel() - 1, labels.data_ptr<int64_t>(),
                                      dist.data_ptr(), sums.data_ptr(), counts.data_ptr<int64_t>(), cen.data_ptr(),
                                      tol.defined() ? tol.data_ptr<double>() : nullptr,
                                      reinterpret_cast<uint8_t*>(conv.data_ptr<bool>()), n_iter.data_ptr<int64_t>(),
                                      spherical ? 1 : 0, current_stream()),
               "kmeans");
  return {cen, conv, n_iter};
}

}  // namespace

TORCH_LIBRARY_IMPL(pointins, CUDA, m) {
  m.impl("kmeans_init", &kmeans_init_cuda);
  m.impl("kmeans_assign", &kmeans_assign_cuda);
  m.impl("kmeans_update", &kmeans_update_cuda);
}

}  // namespace pointins

// Operator schemas of the pointins library and the Python module init of pointins._C.
// Implementations register per backend: csrc/cpu/*.cpp (CPU), csrc/cuda/*.cpp (CUDA);
// fake (meta) implementations, autograd and the Python API live in pointins/ops/.
#include <Python.h>

#include <torch/library.h>

#include "common.h"

#ifndef POINTINS_SOURCE_HASH
#define POINTINS_SOURCE_HASH "unknown"
#endif
#ifndef POINTINS_TORCH_VERSION
#define POINTINS_TORCH_VERSION "unknown"
#endif
#ifndef POINTINS_CUDA_ARCHS
#define POINTINS_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(pointins, m) {
  // floor(coord / grid_size) - per-sample minimum; coord (N, 3) float, offsets (B+1,) int64.
  m.def("grid_coord(Tensor coord, Tensor offsets, float[] grid_size) -> Tensor");
  // (batch, x, y, z) -> int64 key; grid_coord (N, 3) int32/int64, batch (N,) or None.
  m.def("pack_keys(Tensor grid_coord, Tensor? batch=None, int bits=16) -> Tensor");
  // int64 key -> (grid_coord (N, 3) int32, batch (N,) int64).
  m.def("unpack_keys(Tensor keys, int bits=16) -> (Tensor, Tensor)");

  // Space-filling-curve codes (N,) per order -> (num_orders, N) int64; orders 0 z, 1 z-trans,
  // 2 hilbert, 3 hilbert-trans; batch above the 3*depth code bits.
  m.def("serialize_encode(Tensor grid_coord, Tensor? batch, int depth, int[] orders) -> Tensor");
  m.def("serialize_decode(Tensor code, int depth, int order) -> (Tensor, Tensor)");
  // Stable sort of int64 keys, per row of a (N,) or (R, N) tensor: (sorted, order) (CPU: radix sort).
  m.def("sort_keys(Tensor keys) -> (Tensor, Tensor)");

  // Hash table on non-negative int64 keys: (table_keys, table_vals) of a power-of-two capacity.
  m.def("hash_build(Tensor keys, int capacity) -> (Tensor, Tensor)");
  m.def("hash_query(Tensor table_keys, Tensor table_vals, Tensor queries) -> Tensor");

  // Unique keys in first-occurrence order: (inverse (N,), first (V,), counts (V,), selected (V,));
  // selected = one seeded, uniformly random point per voxel when seed is given, else first.
  m.def("voxel_group(Tensor keys, int? seed=None) -> (Tensor, Tensor, Tensor, Tensor)");
  // voxel_group's seeded selection from a point -> voxel map (V,) (-1 for a voxel without points).
  m.def("voxel_select(Tensor inverse, int num_voxels, int seed) -> Tensor");
  // Submanifold kernel map (N, kernel_size^3): neighbour index or -1.
  m.def("kernel_map(Tensor grid_coord, Tensor? batch, int kernel_size, int dilation, int bits=16) -> Tensor");
  // Its pairs grouped by offset: (in_index (P,), out_index (P,), kernel_offsets (K+1,)); offset-major,
  // output rows ascending (CPU; other devices use the torch ops in pointins/ops/voxel.py).
  m.def("kernel_map_pairs(Tensor kmap) -> (Tensor, Tensor, Tensor)");
  // CPU sparse convolution of narrow layers (implicit GEMM on the dense map; pointins/ops/sparse_conv.py picks
  // it): out (M, Cout) = bias + sum_k x[kmap[:, k]] @ weight[k], weight (K, Cin, Cout); check: verify the map's
  // entries are -1 or rows of x first. The weight gradient (K, Cin, Cout) of the same conv for grad (M, Cout).
  m.def("sparse_conv_implicit(Tensor x, Tensor kmap, Tensor weight, Tensor? bias, bool check=True) -> Tensor");
  m.def("sparse_conv_weight_grad(Tensor x, Tensor kmap, Tensor grad, bool check=True) -> Tensor");
  // Wide layers: gather-GEMM-scatter over the map's pairs grouped by offset (kernel_map_pairs): out (M, Cout) =
  // bias + sum_k out[out_idx] += x[in_idx] @ weight[k]; and the weight gradient of the same pairs for grad (M, Cout).
  // Pair indices are trusted (from kernel_map_pairs of a checked map).
  m.def("sparse_conv_pairs(Tensor x, Tensor in_idx, Tensor out_idx, Tensor koff, Tensor weight, Tensor? bias, "
        "int num_out) -> Tensor");
  m.def("sparse_conv_pairs_wgrad(Tensor x, Tensor grad, Tensor in_idx, Tensor out_idx, Tensor koff) -> Tensor");
  // View-pipeline kernels (bitwise the NumPy code in pointins/data/transforms.py): coord (N, 3) float64 displaced
  // by mag x the trilinear interpolation of lattice (X, Y, Z, 3) float64 at (coord - lo) / gran + 1; and the hue
  // rotation of colour (N, 3) float32 in 0-255 by shift (a fraction of the hue circle).
  m.def("elastic_displace(Tensor coord, Tensor lattice, float[] lo, float gran, float mag) -> Tensor");
  m.def("hue_shift(Tensor color, float shift) -> Tensor");
  // PTv3 patch padding: (pad, unpad, cu_seqlens).
  m.def("patch_partition(Tensor offsets, int patch_size) -> (Tensor, Tensor, Tensor)");

  // Segment ids (N,) -> stable CSR: (perm (N,), offsets (S+1,)); negative ids are ignored (last in perm).
  m.def("segment_index_csr(Tensor index, int num_segments) -> (Tensor, Tensor)");
  // Reduction of src (N, C) rows offsets[s]..offsets[s+1] (through perm) -> (out (S, C), aux):
  // aux = int64 arg rows (max/min; empty with with_arg=False on the CPU: values only), the mean (var), or an
  // empty tensor (sum/mean).
  // Ragged batched K-means steps (the Lloyd loop is pointins/ops/cluster.py). Sets: CSR offsets
  // of the points; coff: CSR offsets of the centroids (k_b = coff[b+1] - coff[b]).
  m.def("kmeans_init(Tensor x, Tensor offsets, Tensor coff, int method, int seed, int local_trials=0) -> Tensor");
  // -> (labels (N,) local cluster ids or -1, dist (N,) squared distance to it, sums (K, D), counts (K,))
  m.def("kmeans_assign(Tensor x, Tensor offsets, Tensor coff, Tensor centroids, Tensor? converged, "
        "bool accumulate, int? max_k=None) -> (Tensor, Tensor, Tensor, Tensor)");
  // -> (centroids, converged, n_iter): new centres, empty clusters relocated, convergence test.
  m.def("kmeans_update(Tensor x, Tensor offsets, Tensor coff, Tensor labels, Tensor dist, Tensor sums, "
        "Tensor counts, Tensor centroids, Tensor? tol, Tensor converged, Tensor n_iter, bool spherical) "
        "-> (Tensor, Tensor, Tensor)");
  // Connected components of the radius graph (|p_i - p_j| < radius, same group >= 0): the root
  // (smallest index) of each point's component, -1 where group < 0.
  m.def("radius_components(Tensor coord, Tensor group, float radius) -> Tensor");
  // The same by segment ids (N,) (negative ids ignored), deterministic: rows in index order.
  m.def("segment_coo(Tensor src, Tensor index, int num_segments, str reduce, int correction=0, bool with_arg=True) "
        "-> (Tensor, Tensor)");
  m.def("segment_csr(Tensor src, Tensor offsets, Tensor? perm, str reduce, int correction=0, bool with_arg=True) "
        "-> (Tensor, Tensor)");
  // Deferred error flags (pointins.ops.deferred_checks): register an int32 (1,) accumulator for its device, or
  // clear one device's (accumulator None, device given) or all; and the number of flag read-backs so far.
  m.def("set_deferred_flags(Tensor? accumulator, Device? device=None) -> ()",
        [](const c10::optional<at::Tensor>& acc, c10::optional<at::Device> device) {
          pointins::set_deferred_flags(acc, device);
        });
  m.def("flag_reads() -> int", []() { return pointins::flag_reads(); });
}

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "PointINS compiled ops; registered as torch.ops.pointins.* on import.",
      -1,
      nullptr,
  };
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef POINTINS_WITH_CUDA
  const int with_cuda = 1;
#else
  const int with_cuda = 0;
#endif
  if (PyModule_AddStringConstant(m, "source_hash", POINTINS_SOURCE_HASH) < 0 ||
      PyModule_AddStringConstant(m, "torch_version", POINTINS_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(m, "cuda_archs", POINTINS_CUDA_ARCHS) < 0 ||
      PyModule_AddIntConstant(m, "with_cuda", with_cuda) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
}

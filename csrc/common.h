// Shared argument checks and error reporting of the ops (CPU and CUDA implementations).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <cstdint>
#include <vector>

namespace pointins {

// Deferred error flags (pointins.ops.deferred_checks): while an int32 accumulator is registered for a device, the
// CUDA glue ORs each op's POINTINS_FLAG_* word into it on the device instead of reading it back (no host sync
// per op); Python reads the accumulator once per step. The ops' kernels never read or write out of bounds whatever
// the flags say, so deferring only delays the error.
void set_deferred_flags(const c10::optional<at::Tensor>& accumulator, const c10::optional<at::Device>& device);
c10::optional<at::Tensor> deferred_flags_for(const at::Device& device);
int64_t flag_reads();  // how many times an op read its flags back (a host sync on CUDA); for sync counting
void count_flag_read();

std::string fmt_vec(const at::Tensor& t);
void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn, const char* op);

// Metadata checks (dtype, shape, device): identical for every backend.
void check_grid_coord_args(const at::Tensor& coord, const at::Tensor& offsets,
                           at::ArrayRef<double> grid_size);
void check_pack_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch,
                     int64_t bits);
void check_unpack_args(const at::Tensor& keys, int64_t bits);

// Turn POINTINS_FLAG_* bits raised by a kernel into one clear Python exception. Only called
// on the error path, so it may run extra (ATen) reductions to describe the problem.
[[noreturn]] void raise_grid_coord_error(int flags, const at::Tensor& coord,
                                         const at::Tensor& offsets,
                                         at::ArrayRef<double> grid_size);
[[noreturn]] void raise_pack_error(int flags, const at::Tensor& grid_coord,
                                   const c10::optional<at::Tensor>& batch, int64_t bits);
[[noreturn]] void raise_unpack_error(int flags, const at::Tensor& keys, int64_t bits);

// Batch ids as contiguous int64 on the same device (or an undefined tensor).
at::Tensor batch_as_int64(const c10::optional<at::Tensor>& batch);

}  // namespace pointins

namespace pointins {

// Serialization.
void check_serialize_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch, int64_t depth,
                          at::IntArrayRef orders);
[[noreturn]] void raise_serialize_error(int flags, const at::Tensor& grid_coord,
                                        const c10::optional<at::Tensor>& batch, int64_t depth);
void check_depth_order(int64_t depth, int64_t order, const char* op);

// Hash table / voxels / kernel maps.
void check_keys_tensor(const at::Tensor& keys, const char* name, const char* op);
int64_t hash_capacity_for(int64_t n);
void check_table(const at::Tensor& table_keys, const at::Tensor& table_vals, const char* op);
void check_kernel_map_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch,
                           int64_t kernel_size, int64_t dilation, int64_t bits);
[[noreturn]] void raise_negative_keys(const at::Tensor& keys, const char* op);

// Patch partition: per-sample padded offsets (host), validated.
std::vector<int64_t> host_offsets(const at::Tensor& offsets, int64_t n_expected, const char* op);
std::vector<int64_t> padded_offsets(const std::vector<int64_t>& off, int64_t patch_size);

}  // namespace pointins

namespace pointins {

// Segment reductions.
void check_segment_index_args(const at::Tensor& index, int64_t num_segments);
[[noreturn]] void raise_segment_index_range(const at::Tensor& index, int64_t num_segments);
// Returns the POINTINS_REDUCE_* code of reduce.
int check_segment_csr_args(const at::Tensor& src, const at::Tensor& offsets, const c10::optional<at::Tensor>& perm,
                           c10::string_view reduce, int64_t correction);
[[noreturn]] void raise_segment_offsets_error(const at::Tensor& offsets, int64_t n, bool with_perm);
void check_segment_coo_args(const at::Tensor& src, const at::Tensor& index, int64_t num_segments);
// The second output of segment_csr/segment_coo: int64 args (max/min), the mean (var), or empty.
at::Tensor segment_aux(int reduce, int64_t num_segments, const at::Tensor& src, bool with_arg = true);

}  // namespace pointins

namespace pointins {

// K-means steps.
void check_kmeans_args(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& coff, const char* op);
void check_kmeans_centroids(const at::Tensor& x, const at::Tensor& centroids, const at::Tensor& coff,
                            const c10::optional<at::Tensor>& converged, const char* op);
// Host arrays: offsets valid CSR over n points, coff valid CSR with k_b <= n_b.
void check_kmeans_update_args(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& coff,
                              const at::Tensor& centroids, const at::Tensor& sums, const at::Tensor& counts,
                              const at::Tensor& converged);
void check_kmeans_sets(const int64_t* off, const int64_t* coff, int64_t num_sets, int64_t n, const char* op);

}  // namespace pointins

namespace pointins {

// Connected components.
void check_components_args(const at::Tensor& coord, const at::Tensor& group, double radius);
// flags: POINTINS_FLAG_NONFINITE or POINTINS_FLAG_OVERFLOW (bits: the key bits per axis needed, 0 if unknown).
[[noreturn]] void raise_components_error(int flags, const at::Tensor& coord, const at::Tensor& group, double radius,
                                         int bits);

}  // namespace pointins

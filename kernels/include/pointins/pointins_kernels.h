/*
 * PointINS CUDA kernels: C API.
 *
 * Every launcher takes raw device pointers and a cudaStream_t, enqueues its kernels on that
 * stream and returns the cudaError_t of the launch (as int; 0 = cudaSuccess). Nothing here
 * synchronises. Data errors (NaN, overflow, bad offsets ...) are not fatal: they are OR-ed as
 * POINTINS_FLAG_* bits into `flags`, a single int32 in device memory that the caller zeroes
 * before the call and reads after it.
 *
 * All sizes and indices are int64. Arrays are dense and row-major: coordinates are (n, 3).
 *
 * Link with libpointins_kernels.a and cudart (CMake target `pointins::kernels`).
 */
#ifndef POINTINS_KERNELS_H_
#define POINTINS_KERNELS_H_

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "pointins/common.h"
#include "pointins/segment.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- packed keys (layout in pointins/keys.h) --------------------------------------------- */

/* keys[i] = pack(grid_coord[i], batch ? batch[i] : 0) for int32 grid coordinates. */
int pointins_pack_keys_i32(const int32_t* grid_coord, const int64_t* batch, int64_t n, int bits,
                           int64_t* keys, int32_t* flags, cudaStream_t stream);
/* Same for int64 grid coordinates. */
int pointins_pack_keys_i64(const int64_t* grid_coord, const int64_t* batch, int64_t n, int bits,
                           int64_t* keys, int32_t* flags, cudaStream_t stream);
/* grid_coord (n, 3) int32 and batch (n) int64 (batch may be NULL) from keys. */
int pointins_unpack_keys(const int64_t* keys, int64_t n, int bits, int32_t* grid_coord,
                         int64_t* batch, int32_t* flags, cudaStream_t stream);

/* ---- grid coordinates ---------------------------------------------------------------------- */

/*
 * out[i, a] = floor(coord[i, a] / grid_size[a]) - min over i's sample of the same, with
 * samples given by CSR offsets[0..num_samples] (offsets[0] = 0, non-decreasing,
 * offsets[num_samples] = n; checked, POINTINS_FLAG_BAD_OFFSETS otherwise).
 * `workspace` is device memory of pointins_grid_coord_workspace_size(num_samples) bytes.
 */
int64_t pointins_grid_coord_workspace_size(int64_t num_samples);
int pointins_grid_coord_f32(const float* coord, const int64_t* offsets, int64_t num_samples,
                            int64_t n, float gx, float gy, float gz, int32_t* out,
                            void* workspace, int32_t* flags, cudaStream_t stream);
int pointins_grid_coord_f64(const double* coord, const int64_t* offsets, int64_t num_samples,
                            int64_t n, double gx, double gy, double gz, int32_t* out,
                            void* workspace, int32_t* flags, cudaStream_t stream);

/* ---- serialization (pointins/serialize.h) ------------------------------------------------ */

/* codes (num_orders, n): curve code of each point for each order (POINTINS_ORDER_*), with
 * batch[i] (optional) above the 3*depth code bits. `orders` is a host array (<= 8 entries). */
int pointins_serialize_encode_i32(const int32_t* grid_coord, const int64_t* batch, int64_t n, int depth,
                                  const int32_t* orders, int num_orders, int64_t* codes, int32_t* flags,
                                  cudaStream_t stream);
int pointins_serialize_encode_i64(const int64_t* grid_coord, const int64_t* batch, int64_t n, int depth,
                                  const int32_t* orders, int num_orders, int64_t* codes, int32_t* flags,
                                  cudaStream_t stream);
int pointins_serialize_decode(const int64_t* codes, int64_t n, int depth, int order, int32_t* grid_coord,
                              int64_t* batch, int32_t* flags, cudaStream_t stream);

/* ---- PTv3 patch padding (pointins/patch.h) ----------------------------------------------- */

/* offsets / offsets_pad: device CSR offsets (num_samples + 1) of the points and of the padded
 * slots (offsets_pad[s+1] - offsets_pad[s] = padded_count(n_s, patch_size)). */
int pointins_patch_partition(const int64_t* offsets, const int64_t* offsets_pad, int64_t num_samples, int64_t n,
                             int64_t total_pad, int64_t patch_size, int64_t* pad, int64_t* unpad,
                             cudaStream_t stream);

/* ---- hash table (pointins/hash.h) --------------------------------------------------------- */

/* capacity: a power of two larger than the number of keys (2x recommended). */
int pointins_hash_init(int64_t* table_keys, int64_t* table_vals, int64_t capacity, cudaStream_t stream);
/* Inserts keys[0..n) (non-negative; a negative key sets POINTINS_FLAG_BAD_KEY and is skipped);
 * table_vals[slot] = smallest i with that key; slots[i] (optional) = the key's slot. */
int pointins_hash_insert(const int64_t* keys, int64_t n, int64_t* table_keys, int64_t* table_vals,
                         int64_t capacity, int64_t* slots, int32_t* flags, cudaStream_t stream);
/* out[j] = table value of queries[j], or -1. */
int pointins_hash_query(const int64_t* table_keys, const int64_t* table_vals, int64_t capacity,
                        const int64_t* queries, int64_t m, int64_t* out, cudaStream_t stream);

/* ---- voxel grouping: unique keys numbered by first occurrence ----------------------------- */
/* 1. pointins_hash_init + pointins_hash_insert(keys, ..., slots)
 * 2. pointins_voxel_mark(table_vals, slots, n, is_first)          is_first[i] = (i first of its key)
 * 3. first_rank = exclusive prefix sum of is_first (e.g. cub::DeviceScan::ExclusiveSum);
 *    number of voxels V = first_rank[n-1] + is_first[n-1]
 * 4. pointins_voxel_assign(...)  slots -> inverse (in place), first (V), counts (V, zeroed) */
int pointins_voxel_mark(const int64_t* table_vals, const int64_t* slots, int64_t n, int64_t* is_first,
                        cudaStream_t stream);
int pointins_voxel_assign(const int64_t* table_vals, const int64_t* first_rank, int64_t n, int64_t* slots_inverse,
                          int64_t* first, int64_t* counts, cudaStream_t stream);
/* selected[v] = a uniformly random point of voxel v (seeded; smallest (priority, index)), -1 if
 * empty. inverse values outside [0, num_voxels) set POINTINS_FLAG_BAD_OFFSETS. */
int pointins_voxel_select(const int64_t* inverse, int64_t n, int64_t num_voxels, uint64_t seed,
                          int64_t* selected, int32_t* flags, cudaStream_t stream);

/* ---- submanifold kernel map --------------------------------------------------------------- */
/* out (n, k^3): index of the voxel at grid_coord[i] + offset (x slowest) in the same batch, or -1.
 * The table must hold pack_key(grid_coord[i], batch[i], bits) -> i (pointins_pack_keys_i32 +
 * pointins_hash_insert). */
int pointins_kernel_map(const int32_t* grid_coord, const int64_t* batch, int64_t n, int bits, int kernel_size,
                        int dilation, const int64_t* table_keys, const int64_t* table_vals, int64_t capacity,
                        int64_t* out, cudaStream_t stream);

/* ---- segment reductions (pointins/segment.h) ---------------------------------------------- */

/*
 * out[s, c] = reduce over rows j in [offsets[s], offsets[s+1]) of src[perm ? perm[j] : j, c]
 * (src (n, channels) of `dtype`, a POINTINS_F* value; out (num_segments, channels) the same dtype).
 * reduce: POINTINS_REDUCE_*. arg (int64, max/min, may be NULL) = row of the extremum, lowest on
 * ties, -1 for an empty segment; mean (var, may be NULL) = the segment mean. correction: the
 * variance divides by n - correction. Deterministic (no atomics). offsets are validated
 * (POINTINS_FLAG_BAD_OFFSETS): start 0, non-decreasing, end == n without perm, <= n with it.
 * `workspace`: pointins_segment_csr_workspace_size(n, channels, num_segments) bytes (0: NULL ok).
 */
int64_t pointins_segment_csr_workspace_size(int64_t n, int64_t channels, int64_t num_segments);
int pointins_segment_csr(int dtype, const void* src, int64_t n, int64_t channels, const int64_t* offsets,
                         int64_t num_segments, const int64_t* perm, int reduce, int correction, void* out,
                         int64_t* arg, void* mean, void* workspace, int32_t* flags, cudaStream_t stream);
/* Segment ids -> CSR: keys[i] = index[i] if 0 <= index[i] < num_segments, else num_segments
 * (negative ids are ignored; ids >= num_segments set POINTINS_FLAG_INDEX_RANGE). Sort the keys
 * stably (e.g. cub::DeviceRadixSort::SortPairs with the iota as values) to get perm, then
 * pointins_segment_offsets_from_sorted writes offsets (num_segments + 1). */
int pointins_segment_keys(const int64_t* index, int64_t n, int64_t num_segments, int64_t* keys, int32_t* flags,
                          cudaStream_t stream);
int pointins_segment_offsets_from_sorted(const int64_t* sorted_keys, int64_t n, int64_t num_segments,
                                         int64_t* offsets, cudaStream_t stream);

/* ---- ragged batched K-means steps (pointins/kmeans.h) ------------------------------------- */
/* Sets: CSR `offsets` over the n points of x (n, D); set b has k_b = coff[b+1] - coff[b] <= n_b
 * centroids at rows coff[b].. of `centroids` (K, D). dtype: POINTINS_F32 or POINTINS_F64.
 * The caller validates offsets/coff (host side, once per K-means call). */

/* Initial centroids: method POINTINS_KMEANS_PLUSPLUS (greedy, local_trials candidates per centre; 0 = 2 +
 * floor(ln k_b); 1 = classic k-means++) or POINTINS_KMEANS_RANDOM, seeded; workspace: n doubles. One block
 * per set. */
int pointins_kmeans_init(int dtype, const void* x, int64_t n, int64_t D, const int64_t* offsets, const int64_t* coff,
                         int64_t num_sets, uint64_t seed, int method, int64_t local_trials, double* workspace,
                         void* centroids, cudaStream_t stream);
/* labels[i] = nearest centroid of i's set (local id, lowest on ties), dist[i] = its squared
 * distance; points of sets with converged[b] != 0 (converged may be NULL) get -1 / 0. With
 * `accumulate`, sums (K, D) and counts (K) (zeroed by the caller) receive the cluster sums
 * (float atomics). max_k: the largest k_b (sizes the shared-memory staging). */
int pointins_kmeans_assign(int dtype, const void* x, int64_t n, int64_t D, const int64_t* offsets, const int64_t* coff,
                           int64_t num_sets, int64_t max_k, const void* centroids, const uint8_t* converged,
                           int accumulate, int64_t* labels, void* dist, void* sums, int64_t* counts,
                           cudaStream_t stream);
/* In place: empty clusters take the farthest points (dist is overwritten), centroids become the
 * cluster means (unit-normalised when spherical), n_iter[b] += 1 and converged[b] = 1 when the
 * squared centre shift <= tol[b] (tol may be NULL). Sets already converged are left alone. */
int pointins_kmeans_update(int dtype, const void* x, int64_t D, const int64_t* offsets, const int64_t* coff,
                           int64_t num_sets, const int64_t* labels, void* dist, void* sums, int64_t* counts,
                           void* centroids, const double* tol, uint8_t* converged, int64_t* n_iter, int spherical,
                           cudaStream_t stream);

/* ---- connected components of a radius graph (pointins/components.h) ---------------------- */
/* 1. pointins_cc_cells: cells (n, 3) = floor(coord / (radius * POINTINS_CC_CELL_FACTOR)) for points
 *    with group >= 0 (NaN/Inf -> POINTINS_FLAG_NONFINITE, |cell| >= 4e15 -> POINTINS_FLAG_OVERFLOW).
 * 2. lx, ly, lz = per-axis minimum cell of those points; bits = bits per axis holding
 *    max - min + 2 * POINTINS_CC_REACH; pointins_cc_keys writes cell keys (INT64_MAX: group < 0).
 * 3. Stable sort of the keys -> sorted_keys, order (points by cell, ascending index in a cell);
 *    n_valid = keys < INT64_MAX; start[c] (num_cells + 1 entries) = first sorted position of cell c
 *    (start[num_cells] = n_valid); cell_of_pos[j] = cell of sorted position j.
 * 4. Hash table on the cell keys sorted_keys[start[c]] (pointins_hash_insert: value = c).
 * 5. parent = -1 (n); pointins_cc_init_parent; pointins_cc_link; pointins_cc_finalize:
 *    parent[i] = the smallest point index of i's component (-1 where group < 0). */
int pointins_cc_cells(int dtype, const void* coord, const int64_t* group, int64_t n, double cell_size, int64_t* cells,
                      int32_t* flags, cudaStream_t stream);
int pointins_cc_keys(const int64_t* cells, const int64_t* group, int64_t n, int64_t lx, int64_t ly, int64_t lz,
                     int bits, int64_t* keys, cudaStream_t stream);
int pointins_cc_init_parent(const int64_t* order, const int64_t* cell_of_pos, const int64_t* start, int64_t n_valid,
                            int64_t* parent, cudaStream_t stream);
int pointins_cc_link(int dtype, const void* coord, const int64_t* order, const int64_t* sorted_keys,
                     const int64_t* start, int64_t num_cells, int bits, double radius, const int64_t* table_keys,
                     const int64_t* table_vals, int64_t capacity, int64_t* parent, cudaStream_t stream);
int pointins_cc_finalize(const int64_t* group, int64_t n, int64_t* parent, cudaStream_t stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* POINTINS_KERNELS_H_ */

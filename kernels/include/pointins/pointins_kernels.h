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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* POINTINS_KERNELS_H_ */

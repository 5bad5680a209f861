// Shared argument checks and error reporting for the key / grid-coordinate ops (CPU and CUDA).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <vector>

namespace pointins {

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

// Helpers shared by the CUDA dispatch glue (csrc/cuda/*.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "../common.h"
#include "pointins/common.h"

namespace pointins {

inline void check_cuda_tensor(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.is_cuda(), "pointins.", op, ": ", name, " is on ", t.device(),
                    "; this is the CUDA implementation (move every tensor argument to the GPU).");
}

inline void check_launch(int err, const char* op) {
  TORCH_CHECK(err == 0, "pointins.", op, ": CUDA kernel launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
}

// Reads the error flags back (one small device-to-host copy; synchronises the stream), or, while
// pointins.ops.deferred_checks() holds an accumulator for this device, ORs them into it on the device and
// returns 0 (no sync; the step's single check raises later).
inline int read_flags(const at::Tensor& flags) {
  if (auto acc = deferred_flags_for(flags.device())) {
    acc->bitwise_or_(flags);
    return 0;
  }
  count_flag_read();
  return flags.item<int32_t>();
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// POINTINS_F32/F64/F16/BF16 code of a floating tensor (the dtype-generic launchers' argument).
inline int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kDouble:
      return POINTINS_F64;
    case at::kHalf:
      return POINTINS_F16;
    case at::kBFloat16:
      return POINTINS_BF16;
    default:
      return POINTINS_F32;
  }
}

inline at::Tensor new_flags(const at::Tensor& like) { return at::zeros({1}, like.options().dtype(at::kInt)); }

}  // namespace pointins

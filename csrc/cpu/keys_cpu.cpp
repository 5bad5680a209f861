// CPU (OpenMP through at::parallel_for) implementations of grid_coord, pack_keys, unpack_keys.
// The element-wise math is kernels/include/pointins/keys.h, shared with the CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <vector>

#include "../common.h"
#include "cpu_common.h"
#include "pointins/keys.h"

namespace pointins {
namespace {

constexpr int64_t kGrain = 1 << 14;

struct Task {
  int64_t sample, begin, end;
};

template <typename F>
int grid_coord_loop(const F* c, const int64_t* off, int64_t num_samples, F gx, F gy, F gz,
                    int32_t* out) {
  // Tasks = sample-aligned chunks, so each chunk's minimum belongs to exactly one sample and the
  // merge is a short serial loop: deterministic and fully parallel even for one huge sample.
  std::vector<Task> tasks;
  for (int64_t s = 0; s < num_samples; ++s)
    for (int64_t b = off[s]; b < off[s + 1]; b += kGrain)
      tasks.push_back({s, b, std::min(b + kGrain, off[s + 1])});
  std::vector<int32_t> tmin(tasks.size() * 3, INT32_MAX);
  std::atomic<int> flags{0};
  at::parallel_for(0, (int64_t)tasks.size(), 1, [&](int64_t t0, int64_t t1) {
    int acc = 0;
    for (int64_t t = t0; t < t1; ++t) {
      int32_t m0 = INT32_MAX, m1 = INT32_MAX, m2 = INT32_MAX;
      for (int64_t i = tasks[t].begin; i < tasks[t].end; ++i) {
        int32_t* o = out + 3 * i;
        acc |= grid_index<F>(c[3 * i], gx, &o[0]);
        acc |= grid_index<F>(c[3 * i + 1], gy, &o[1]);
        acc |= grid_index<F>(c[3 * i + 2], gz, &o[2]);
        m0 = std::min(m0, o[0]);
        m1 = std::min(m1, o[1]);
        m2 = std::min(m2, o[2]);
      }
      tmin[3 * t] = m0;
      tmin[3 * t + 1] = m1;
      tmin[3 * t + 2] = m2;
    }
    if (acc) flags.fetch_or(acc, std::memory_order_relaxed);
  });
  if (flags.load()) return flags.load();
  std::vector<int32_t> smin(num_samples * 3, INT32_MAX);
  for (size_t t = 0; t < tasks.size(); ++t)
    for (int a = 0; a < 3; ++a)
      smin[3 * tasks[t].sample + a] = std::min(smin[3 * tasks[t].sample + a], tmin[3 * t + a]);
  at::parallel_for(0, (int64_t)tasks.size(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int32_t* m = &smin[3 * tasks[t].sample];
      for (int64_t i = tasks[t].begin; i < tasks[t].end; ++i) {
        out[3 * i] -= m[0];
        out[3 * i + 1] -= m[1];
        out[3 * i + 2] -= m[2];
      }
    }
  });
  return 0;
}

at::Tensor grid_coord_cpu(const at::Tensor& coord_in, const at::Tensor& offsets_in,
                          at::ArrayRef<double> grid_size) {
  check_grid_coord_args(coord_in, offsets_in, grid_size);
  check_cpu(coord_in, "coord", "grid_coord");
  auto coord = coord_in.contiguous();
  auto offsets = offsets_in.contiguous();
  const int64_t n = coord.size(0), num_samples = offsets.numel() - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  bool ok = off[0] == 0 && off[num_samples] == n;
  for (int64_t s = 0; ok && s < num_samples; ++s) ok = off[s + 1] >= off[s];
  if (!ok) raise_grid_coord_error(POINTINS_FLAG_BAD_OFFSETS, coord, offsets, grid_size);

  auto out = at::empty({n, 3}, coord.options().dtype(at::kInt));
  int flags = 0;
  AT_DISPATCH_FLOATING_TYPES(coord.scalar_type(), "pointins_grid_coord_cpu", [&] {
    flags = grid_coord_loop<scalar_t>(coord.data_ptr<scalar_t>(), off, num_samples,
                                      (scalar_t)grid_size[0], (scalar_t)grid_size[1],
                                      (scalar_t)grid_size[2], out.data_ptr<int32_t>());
  });
  if (flags) raise_grid_coord_error(flags, coord, offsets, grid_size);
  return out;
}

at::Tensor pack_keys_cpu(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in,
                         int64_t bits) {
  check_pack_args(grid_in, batch_in, bits);
  check_cpu(grid_in, "grid_coord", "pack_keys");
  return pack_keys_checked(grid_in, batch_in, bits);
}

std::tuple<at::Tensor, at::Tensor> unpack_keys_cpu(const at::Tensor& keys_in, int64_t bits) {
  check_unpack_args(keys_in, bits);
  check_cpu(keys_in, "keys", "unpack_keys");
  auto keys = keys_in.contiguous();
  auto [grid, batch, flags] =
      decode_points(keys, kGrain, [bits](int64_t key, int32_t* x, int32_t* y, int32_t* z, int64_t* bt) {
        return unpack_key(key, (int)bits, x, y, z, bt);
      });
  if (flags) raise_unpack_error(flags, keys, bits);
  return {grid, batch};
}

}  // namespace

at::Tensor pack_keys_checked(const at::Tensor& grid_in, const c10::optional<at::Tensor>& batch_in, int64_t bits) {
  auto grid = grid_in.contiguous();
  auto batch = batch_as_int64(batch_in);
  const int64_t n = grid.size(0);
  auto keys = at::empty({n}, grid.options().dtype(at::kLong));
  const int64_t* b = batch.defined() ? batch.data_ptr<int64_t>() : nullptr;
  int64_t* k = keys.data_ptr<int64_t>();
  int flags = 0;
  AT_DISPATCH_INDEX_TYPES(grid.scalar_type(), "pointins_pack_keys_cpu", [&] {
    const index_t* g = grid.data_ptr<index_t>();
    flags = parallel_flags(n, kGrain, [&](int64_t i) {
      return pack_key<index_t>(g[3 * i], g[3 * i + 1], g[3 * i + 2], b ? b[i] : 0, (int)bits, &k[i]);
    });
  });
  if (flags) raise_pack_error(flags, grid, batch_in, bits);
  return keys;
}

}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("grid_coord", &pointins::grid_coord_cpu);
  m.impl("pack_keys", &pointins::pack_keys_cpu);
  m.impl("unpack_keys", &pointins::unpack_keys_cpu);
}

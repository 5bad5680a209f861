// Runs one CUDA op of kernels/ on the CPU emulator with inputs dumped from a failing GPU run:
// voxelization (grid coordinates, packed keys, hash grouping) of one point cloud.
//
//   python -c "import torch; torch.load('failing.pt')['coord'].cpu().float().numpy().tofile('coord.f32')"
//   build/emu-asan/pointins_emu_repro coord.f32 0.05
//   POINTINS_EMU_SCHEDULE=workers=3,order=shuffled,yield=0.3,seed=5 build/emu-tsan/pointins_emu_repro coord.f32 0.05
//
// A COORD_FILE ending in .txt is read as text instead (x y z per line).
//
// Copy this file to reproduce another op: kernels/tests/emu/test_*.cpp show the launch sequence
// of every launcher; build your copy with -DPOINTINS_EMU_REPRO=path/to/your.cpp.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pointins/pointins_kernels.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: %s COORD_FILE GRID_SIZE   (COORD_FILE: raw float32, n x 3, e.g. numpy .tofile; "
                 "or .txt: x y z per line)\n",
                 argv[0]);
    return 2;
  }
  const std::string path(argv[1]);
  const bool text = path.size() > 4 && path.compare(path.size() - 4, 4, ".txt") == 0;
  FILE* f = std::fopen(argv[1], text ? "r" : "rb");
  if (!f) {
    std::perror(argv[1]);
    return 2;
  }
  std::vector<float> coord;
  float buf[3];
  if (text)
    while (std::fscanf(f, "%f %f %f", &buf[0], &buf[1], &buf[2]) == 3) coord.insert(coord.end(), buf, buf + 3);
  else
    while (std::fread(buf, sizeof(float), 3, f) == 3) coord.insert(coord.end(), buf, buf + 3);
  std::fclose(f);
  const float grid = std::strtof(argv[2], nullptr);
  const int64_t n = (int64_t)coord.size() / 3;
  const int64_t offsets[2] = {0, n};
  int32_t flags = 0;

  std::vector<int32_t> gc(3 * n);
  std::vector<uint8_t> ws((size_t)pointins_grid_coord_workspace_size(1));
  int err = pointins_grid_coord_f32(coord.data(), offsets, 1, n, grid, grid, grid, gc.data(), ws.data(), &flags,
                                    nullptr);
  std::printf("grid_coord: %d points, launch error %d, flags %d\n", (int)n, err, flags);
  if (err || flags) return 1;

  std::vector<int64_t> keys(n);
  err = pointins_pack_keys_i32(gc.data(), nullptr, n, POINTINS_DEFAULT_KEY_BITS, keys.data(), &flags, nullptr);
  std::printf("pack_keys: launch error %d, flags %d\n", err, flags);
  if (err || flags) return 1;

  int64_t cap = 2;
  while (cap <= 2 * n) cap <<= 1;
  std::vector<int64_t> tk(cap), tv(cap), slots(n), is_first(n), rank(n);
  err = pointins_hash_init(tk.data(), tv.data(), cap, nullptr) ||
        pointins_hash_insert(keys.data(), n, tk.data(), tv.data(), cap, slots.data(), &flags, nullptr) ||
        pointins_voxel_mark(tv.data(), slots.data(), n, is_first.data(), nullptr);
  int64_t voxels = 0;
  for (int64_t i = 0; i < n; ++i) rank[i] = voxels, voxels += is_first[i];
  std::vector<int64_t> first(voxels), counts(voxels, 0);
  err = err || pointins_voxel_assign(tv.data(), rank.data(), n, slots.data(), first.data(), counts.data(), nullptr);
  std::printf("voxelize: %lld voxels, launch error %d, flags %d\n", (long long)voxels, err, flags);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  if (total != n) {
    std::printf("voxel counts add up to %lld, not %lld\n", (long long)total, (long long)n);
    return 1;
  }
  return err || flags ? 1 : 0;
}

// Host-side checks of the key math shared by the CUDA kernels and the CPU implementation.
#include <cstdint>
#include <cstdio>
#include <random>

#include "host_check.h"
#include "pointins/keys.h"

int main() {
  std::mt19937_64 rng(0);
  for (int bits = POINTINS_MIN_KEY_BITS; bits <= POINTINS_MAX_KEY_BITS; ++bits) {
    const int64_t lim = int64_t(1) << bits;
    const int64_t blim = pointins::key_batch_capacity(bits);
    for (int t = 0; t < 2000; ++t) {
      const int32_t x = int32_t(rng() % lim), y = int32_t(rng() % lim), z = int32_t(rng() % lim);
      const int64_t b = int64_t(rng() % uint64_t(blim));
      int64_t key = -1;
      CHECK(pointins::pack_key<int32_t>(x, y, z, b, bits, &key) == 0);
      CHECK(key >= 0);
      int32_t ux, uy, uz;
      int64_t ub;
      CHECK(pointins::unpack_key(key, bits, &ux, &uy, &uz, &ub) == 0);
      CHECK(ux == x && uy == y && uz == z && ub == b);
    }
    int64_t key;
    CHECK(pointins::pack_key<int32_t>(-1, 0, 0, 0, bits, &key) == POINTINS_FLAG_NEGATIVE);
    CHECK(pointins::pack_key<int64_t>(lim, 0, 0, 0, bits, &key) == POINTINS_FLAG_OVERFLOW);
    CHECK(pointins::pack_key<int64_t>(0, 0, 0, blim, bits, &key) == POINTINS_FLAG_BATCH_RANGE);
  }
  int32_t g;
  CHECK(pointins::grid_index<float>(-0.5f, 1.0f, &g) == 0 && g == -1);
  CHECK(pointins::grid_index<double>(2.999, 1.0, &g) == 0 && g == 2);
  CHECK(pointins::grid_index<float>(1.0f / 0.0f, 1.0f, &g) == POINTINS_FLAG_NONFINITE);
  CHECK(pointins::grid_index<double>(1e12, 1e-3, &g) == POINTINS_FLAG_OVERFLOW);
  const int64_t offsets[] = {0, 3, 3, 10};
  CHECK(pointins::sample_of(offsets, 3, 0) == 0);
  CHECK(pointins::sample_of(offsets, 3, 2) == 0);
  CHECK(pointins::sample_of(offsets, 3, 3) == 2);
  CHECK(pointins::sample_of(offsets, 3, 9) == 2);
  if (failures) return 1;
  std::printf("keys_host_test: all checks passed\n");
  return 0;
}

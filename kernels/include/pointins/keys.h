/*
 * Packed voxel keys and grid coordinates: the element-wise math, shared bit-for-bit by the
 * CUDA kernels (kernels/keys.cu) and the CPU implementation (csrc/cpu/keys.cpp).
 *
 * Key layout for `bits` bits per axis (1..21, default 16):
 *
 *     bit 63      : always 0 (keys are non-negative int64, so signed sorts work)
 *     62 .. 3*bits: batch index      (63 - 3*bits bits; 15 bits = 32768 samples at bits=16)
 *     3*bits-1 .. : x                (bits bits)
 *     2*bits-1 .. : y                (bits bits)
 *     bits-1 .. 0 : z                (bits bits)
 *
 * so sorting keys sorts points by (batch, x, y, z) lexicographically, and the packing is
 * injective on its domain 0 <= x, y, z < 2^bits, 0 <= batch < 2^(63 - 3*bits).
 *
 * C++ header (templates); the C API of the launchers is in pointins_kernels.h.
 */
#ifndef POINTINS_KEYS_H_
#define POINTINS_KEYS_H_

#include <stdint.h>

#include "pointins/common.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace pointins {

PI_HD bool key_bits_valid(int bits) {
  return bits >= POINTINS_MIN_KEY_BITS && bits <= POINTINS_MAX_KEY_BITS;
}

/* Number of distinct batch indices the layout can hold (2^(63 - 3*bits)). */
PI_HD int64_t key_batch_capacity(int bits) { return (int64_t)1 << (63 - 3 * bits); }

/* Packs one point; returns 0 or POINTINS_FLAG_* bits (the key is then 0). */
template <typename T>
PI_HD int pack_key(T x, T y, T z, int64_t b, int bits, int64_t* key) {
  const int64_t lim = (int64_t)1 << bits;
  int flags = 0;
  if (x < 0 || y < 0 || z < 0) flags |= POINTINS_FLAG_NEGATIVE;
  if ((int64_t)x >= lim || (int64_t)y >= lim || (int64_t)z >= lim) flags |= POINTINS_FLAG_OVERFLOW;
  if (b < 0 || b >= key_batch_capacity(bits)) flags |= POINTINS_FLAG_BATCH_RANGE;
  if (flags) {
    *key = 0;
    return flags;
  }
  *key = (b << (3 * bits)) | ((int64_t)x << (2 * bits)) | ((int64_t)y << bits) | (int64_t)z;
  return 0;
}

/* Inverse of pack_key. A negative key sets POINTINS_FLAG_BAD_KEY (outputs zeroed). */
PI_HD int unpack_key(int64_t key, int bits, int32_t* x, int32_t* y, int32_t* z, int64_t* b) {
  if (key < 0) {
    *x = *y = *z = 0;
    *b = 0;
    return POINTINS_FLAG_BAD_KEY;
  }
  const int64_t mask = ((int64_t)1 << bits) - 1;
  *z = (int32_t)(key & mask);
  *y = (int32_t)((key >> bits) & mask);
  *x = (int32_t)((key >> (2 * bits)) & mask);
  *b = key >> (3 * bits);
  return 0;
}

PI_HD bool is_finite(float v) {
#if defined(__CUDA_ARCH__)
  return isfinite(v);
#else
  return std::isfinite(v);
#endif
}
PI_HD bool is_finite(double v) {
#if defined(__CUDA_ARCH__)
  return isfinite(v);
#else
  return std::isfinite(v);
#endif
}
PI_HD float floor_of(float v) {
#if defined(__CUDA_ARCH__)
  return floorf(v);
#else
  return std::floor(v);
#endif
}
PI_HD double floor_of(double v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

/*
 * floor(c / g) computed in the input precision (one IEEE division, one floor), as the
 * PyTorch reference `torch.floor(coord / grid_size)` does. Returns 0 or flags.
 */
template <typename F>
PI_HD int grid_index(F c, F g, int32_t* out) {
  if (!is_finite(c)) {
    *out = 0;
    return POINTINS_FLAG_NONFINITE;
  }
  const F f = floor_of(c / g);
  if (!(f >= -(F)POINTINS_GRID_LIMIT && f < (F)POINTINS_GRID_LIMIT)) {
    *out = 0;
    return POINTINS_FLAG_OVERFLOW;
  }
  *out = (int32_t)f;
  return 0;
}

/*
 * Sample that owns point i under CSR offsets[0..num_samples]: the s with
 * offsets[s] <= i < offsets[s+1] (empty samples are skipped). Requires valid offsets.
 */
PI_HD int64_t sample_of(const int64_t* offsets, int64_t num_samples, int64_t i) {
  int64_t lo = 0, hi = num_samples; /* answer in [lo, hi) */
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace pointins

#endif /* POINTINS_KEYS_H_ */

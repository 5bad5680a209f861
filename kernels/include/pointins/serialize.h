/*
 * Space-filling-curve serialization of integer grid coordinates (Point Transformer V3 codes).
 *
 * Conventions (METHOD.md section 2, bit-exact with Pointcept's PTv3 serialization):
 *   z-order : bit i of x goes to code bit 3i+2, of y to 3i+1, of z to 3i.
 *   Hilbert : Skilling's transpose algorithm (AIP Conf. Proc. 707, 2004) on `depth` bits per
 *             axis, x most significant in each bit triplet of the index.
 *   -trans  : x and y swapped before encoding (after decoding).
 *   batch   : code | batch << 3*depth.
 * Shared bit-for-bit by the CUDA kernels (kernels/serialize.cu) and the CPU implementation.
 */
#ifndef POINTINS_SERIALIZE_H_
#define POINTINS_SERIALIZE_H_

#include <stdint.h>

#include "pointins/common.h"

namespace pointins {

/* Spread the low 21 bits of v so that bit i lands on bit 3i. */
PI_HD uint64_t spread3(uint64_t v) {
  v &= 0x1fffffull;
  v = (v | (v << 32)) & 0x1f00000000ffffull;
  v = (v | (v << 16)) & 0x1f0000ff0000ffull;
  v = (v | (v << 8)) & 0x100f00f00f00f00full;
  v = (v | (v << 4)) & 0x10c30c30c30c30c3ull;
  v = (v | (v << 2)) & 0x1249249249249249ull;
  return v;
}

/* Inverse of spread3: gather bits 3i into bit i. */
PI_HD uint64_t compact3(uint64_t v) {
  v &= 0x1249249249249249ull;
  v = (v ^ (v >> 2)) & 0x10c30c30c30c30c3ull;
  v = (v ^ (v >> 4)) & 0x100f00f00f00f00full;
  v = (v ^ (v >> 8)) & 0x1f0000ff0000ffull;
  v = (v ^ (v >> 16)) & 0x1f00000000ffffull;
  v = (v ^ (v >> 32)) & 0x1fffffull;
  return v;
}

PI_HD uint64_t interleave3(uint32_t x, uint32_t y, uint32_t z) {
  return (spread3(x) << 2) | (spread3(y) << 1) | spread3(z);
}

PI_HD void deinterleave3(uint64_t c, uint32_t* x, uint32_t* y, uint32_t* z) {
  *x = (uint32_t)compact3(c >> 2);
  *y = (uint32_t)compact3(c >> 1);
  *z = (uint32_t)compact3(c);
}

/* One step of Skilling's excess-work transform at bit Q for axis i: if axis i has bit Q set,
   invert the lower bits of x; otherwise exchange the lower bits of x and axis i. It is its own
   inverse, so encoding and decoding differ only in the order of the steps. */
PI_HD void skilling_step(uint32_t* X, int i, uint32_t Q) {
  const uint32_t P = Q - 1;
  if (X[i] & Q) {
    X[0] ^= P;
  } else {
    const uint32_t t = (X[0] ^ X[i]) & P;
    X[0] ^= t;
    X[i] ^= t;
  }
}

/* Hilbert index of (x, y, z), each < 2^depth. */
PI_HD uint64_t hilbert_encode3(uint32_t x, uint32_t y, uint32_t z, int depth) {
  uint32_t X[3] = {x, y, z};
  /* Inverse undo excess work (Skilling's AxestoTranspose), most significant bit first. */
  for (uint32_t Q = 1u << (depth - 1); Q > 1; Q >>= 1)
    for (int i = 0; i < 3; ++i) skilling_step(X, i, Q);
  /* The transposed index, interleaved (x most significant), is the Gray code of the Hilbert
     index: decode it with a prefix XOR from the most significant bit. */
  uint64_t h = interleave3(X[0], X[1], X[2]);
  h ^= h >> 1;
  h ^= h >> 2;
  h ^= h >> 4;
  h ^= h >> 8;
  h ^= h >> 16;
  h ^= h >> 32;
  return h;
}

/* Inverse of hilbert_encode3 (Skilling's TransposetoAxes). */
PI_HD void hilbert_decode3(uint64_t h, int depth, uint32_t* x, uint32_t* y, uint32_t* z) {
  uint32_t X[3];
  deinterleave3(h ^ (h >> 1), &X[0], &X[1], &X[2]); /* Gray encode, then transpose */
  const uint32_t N = 2u << (depth - 1);
  for (uint32_t Q = 2; Q != N; Q <<= 1)
    for (int i = 2; i >= 0; --i) skilling_step(X, i, Q);
  *x = X[0];
  *y = X[1];
  *z = X[2];
}

PI_HD bool order_valid(int order) { return order >= 0 && order <= 3; }

/* Code of one point for one order; returns 0 or POINTINS_FLAG_* (code then 0). */
template <typename T>
PI_HD int serialize_encode_one(T gx, T gy, T gz, int64_t b, int depth, int order, int64_t* code) {
  const int64_t lim = (int64_t)1 << depth;
  int flags = 0;
  if (gx < 0 || gy < 0 || gz < 0) flags |= POINTINS_FLAG_NEGATIVE;
  if ((int64_t)gx >= lim || (int64_t)gy >= lim || (int64_t)gz >= lim) flags |= POINTINS_FLAG_OVERFLOW;
  if (b < 0 || b >= ((int64_t)1 << (63 - 3 * depth))) flags |= POINTINS_FLAG_BATCH_RANGE;
  if (flags) {
    *code = 0;
    return flags;
  }
  uint32_t x = (uint32_t)gx, y = (uint32_t)gy, z = (uint32_t)gz;
  if (order == POINTINS_ORDER_Z_TRANS || order == POINTINS_ORDER_HILBERT_TRANS) {
    const uint32_t t = x;
    x = y;
    y = t;
  }
  const uint64_t c = order <= POINTINS_ORDER_Z_TRANS ? interleave3(x, y, z) : hilbert_encode3(x, y, z, depth);
  *code = (int64_t)c | (b << (3 * depth));
  return 0;
}

/* Inverse of serialize_encode_one. A negative code sets POINTINS_FLAG_BAD_KEY. */
PI_HD int serialize_decode_one(int64_t code, int depth, int order, int32_t* gx, int32_t* gy, int32_t* gz,
                               int64_t* b) {
  if (code < 0) {
    *gx = *gy = *gz = 0;
    *b = 0;
    return POINTINS_FLAG_BAD_KEY;
  }
  const uint64_t mask = ((uint64_t)1 << (3 * depth)) - 1;
  const uint64_t c = (uint64_t)code & mask;
  uint32_t x, y, z;
  if (order <= POINTINS_ORDER_Z_TRANS)
    deinterleave3(c, &x, &y, &z);
  else
    hilbert_decode3(c, depth, &x, &y, &z);
  if (order == POINTINS_ORDER_Z_TRANS || order == POINTINS_ORDER_HILBERT_TRANS) {
    const uint32_t t = x;
    x = y;
    y = t;
  }
  *gx = (int32_t)x;
  *gy = (int32_t)y;
  *gz = (int32_t)z;
  *b = code >> (3 * depth);
  return 0;
}

}  // namespace pointins

#endif /* POINTINS_SERIALIZE_H_ */

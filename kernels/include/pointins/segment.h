/*
 * Segment reductions over CSR offsets: shared definitions of the CUDA kernels
 * (kernels/segment.cu) and the CPU implementation (csrc/cpu/segment_cpu.cpp).
 *
 * Rows of segment s are positions [offsets[s], offsets[s+1]) of the (optionally permuted) input:
 * row j of the segment is src[perm ? perm[j] : j]. Rows are visited in position order, so with a
 * stable sort as perm the rows of a segment are in ascending original index and the first
 * maximum found is the one with the lowest index (argmax / argmin ties go to the lowest index).
 *
 * Empty segments reduce to 0 (arg -1); a variance over n <= correction rows is 0.
 */
#ifndef POINTINS_SEGMENT_H_
#define POINTINS_SEGMENT_H_

#include <stdint.h>

#include "pointins/common.h"

enum pointins_reduce {
  POINTINS_REDUCE_SUM = 0,
  POINTINS_REDUCE_MEAN = 1,
  POINTINS_REDUCE_MAX = 2,
  POINTINS_REDUCE_MIN = 3,
  POINTINS_REDUCE_VAR = 4
};

/* Rows per chunk of the two-level (long-segment) CUDA path. */
#define POINTINS_SEGMENT_CHUNK 128

#ifdef __cplusplus
namespace pointins {

/*
 * Long segments (at least 2 L rows, L = POINTINS_SEGMENT_CHUNK) are cut into chunks of L rows that
 * are reduced in parallel and merged in chunk order; shorter segments are reduced directly. Chunk
 * slots need no prefix sum: a long segment [a, b) owns slots [2 floor(a/L), 2 floor(a/L) +
 * ceil((b-a)/L)), inside [2 floor(a/L), 2 floor(b/L)) because ceil((b-a)/L) <= q + 1 <= 2q with
 * q = floor(b/L) - floor(a/L) >= 1; so the ranges of long segments are disjoint, and a slot's
 * segment is the last one whose range starts at or before it. Slots: < 2 floor(n/L) + 2.
 */
PI_HD bool chunk_long(int64_t seg_len) { return seg_len >= 2 * POINTINS_SEGMENT_CHUNK; }
PI_HD int64_t chunk_base(int64_t seg_start) { return 2 * (seg_start / POINTINS_SEGMENT_CHUNK); }
PI_HD int64_t chunk_count(int64_t seg_len) { return (seg_len + POINTINS_SEGMENT_CHUNK - 1) / POINTINS_SEGMENT_CHUNK; }
PI_HD int64_t chunk_slots(int64_t n) { return 2 * (n / POINTINS_SEGMENT_CHUNK) + 2; }

/* Largest s in [0, num_segments) with chunk_base(offsets[s]) <= q (binary search). */
PI_HD int64_t chunk_segment(const int64_t* offsets, int64_t num_segments, int64_t q) {
  int64_t lo = 0, hi = num_segments - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (chunk_base(offsets[mid]) <= q)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace pointins
#endif /* __cplusplus */

#endif /* POINTINS_SEGMENT_H_ */

/*
 * Connected components of a radius graph within groups: shared definitions of the CUDA kernels
 * (kernels/components.cu) and the CPU implementation (csrc/cpu/components_cpu.cpp).
 *
 * Points i, j are linked when |p_i - p_j| < r and group_i == group_j (group >= 0). Points are
 * hashed into cubic cells of side h = r / sqrt(3) (slightly less): two points of one cell are
 * always closer than r, so a cell is connected by construction, and only pairs of cells at most
 * two cells apart per axis need point-to-point tests. A pair of cells stops at the first linking
 * pair, or at once when the two cells are already in one component (union-find), so dense
 * clusters cost about linear time. Union-find links the larger root under the smaller: the
 * final root of every component is its smallest point index, whatever the order of the unions.
 */
#ifndef POINTINS_COMPONENTS_H_
#define POINTINS_COMPONENTS_H_

#include <stdint.h>

#include "pointins/common.h"

/* Cells of side r / sqrt(3) * (1 - 1e-6): same-cell points are within r strictly. */
#define POINTINS_CC_CELL_FACTOR (0.57735026918962573 * (1.0 - 1e-6))
/* Neighbour cells: offsets in [-2, 2]^3; half of them (lexicographically positive) per cell. */
#define POINTINS_CC_REACH 2
#define POINTINS_CC_HALF_STENCIL 62

#ifdef __cplusplus
namespace pointins {

/* The t-th (0..61) lexicographically positive offset of [-2, 2]^3 (x slowest). */
PI_HD void cc_offset(int t, int* dx, int* dy, int* dz) {
  const int index = 63 + t; /* offsets 63..124 of the 125, i.e. after (0, 0, 0) = 62 */
  *dz = index % 5 - 2;
  *dy = (index / 5) % 5 - 2;
  *dx = index / 25 - 2;
}

/* key = group << 3b | x << 2b | y << b | z with b bits per axis. */
PI_HD int64_t cc_key(int64_t group, int64_t x, int64_t y, int64_t z, int bits) {
  return (group << (3 * bits)) | (x << (2 * bits)) | (y << bits) | z;
}

}  // namespace pointins
#endif /* __cplusplus */

#endif /* POINTINS_COMPONENTS_H_ */

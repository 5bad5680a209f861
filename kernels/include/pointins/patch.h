/*
 * Point Transformer V3 patch padding (METHOD.md section 2). For a sample of n points and patch
 * size K: if n > K it is padded to n_pad = ceil(n / K) * K slots, and slot j >= n repeats the
 * point K slots earlier (j - K); if n <= K it is one short patch of n slots.
 *   pad[offsets_pad[s] + j] = offsets[s] + (j < n ? j : j - K)     (slot -> point)
 *   unpad[offsets[s] + p]   = offsets_pad[s] + p                   (point -> slot)
 */
#ifndef POINTINS_PATCH_H_
#define POINTINS_PATCH_H_

#include <stdint.h>

#include "pointins/common.h"

namespace pointins {

PI_HD int64_t padded_count(int64_t n, int64_t patch_size) {
  return n > patch_size ? (n + patch_size - 1) / patch_size * patch_size : n;
}

PI_HD int64_t pad_source(int64_t j, int64_t n, int64_t patch_size) { return j < n ? j : j - patch_size; }

}  // namespace pointins

#endif /* POINTINS_PATCH_H_ */

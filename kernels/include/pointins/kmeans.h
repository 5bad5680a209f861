/*
 * Ragged batched K-means: definitions shared by the CUDA kernels (kernels/kmeans.cu), the CPU
 * implementation (csrc/cpu/kmeans_cpu.cpp) and the reference (pointins/ops/reference.py).
 *
 * Sets are CSR offsets over the points; set b has k_b centroids at rows coff[b]..coff[b+1] of
 * one (sum k_b, D) centroid array. Random draws (initialisation) are a counter-based hash of
 * (seed, set, draw), identical on every backend.
 *
 * k-means++ is the greedy variant (Arthur & Vassilvitskii; scikit-learn's default): the first centre is
 * point floor(u_0 n); each next centre r draws L candidates by D^2 sampling (candidate t uses draw
 * 1 + (r - 1) L + t: the first point, in order, with d2 > 0 whose prefix sum of d2 exceeds u x sum d2; the
 * last point with d2 > 0 if rounding leaves none; point floor(u n) if every d2 is 0) and keeps the one that
 * makes sum_i min(d2_i, |x_i - c|^2) smallest (the first on ties). L = local_trials when > 0, else
 * 2 + floor(ln k_b). L = 1 is the classic single-draw k-means++.
 */
#ifndef POINTINS_KMEANS_H_
#define POINTINS_KMEANS_H_

#include <stdint.h>

#include "pointins/hash.h"

#ifdef __cplusplus
namespace pointins {

/* Uniform double in [0, 1) for draw `draw` of set `set`: top 53 bits of a seeded hash. */
PI_HD double kmeans_uniform(uint64_t seed, int64_t set, int64_t draw) {
  const uint64_t h = hash_mix(hash_mix(seed ^ 0x6a09e667f3bcc909ull) ^ hash_mix((uint64_t)set * 0x9e3779b97f4a7c15ull + (uint64_t)draw));
  return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Candidates per centre: `trials` when > 0, else 2 + floor(ln kb) (scikit-learn's n_local_trials), with
 * floor(ln kb) from exact integer thresholds ceil(e^m) so every backend agrees. */
PI_HD int64_t kmeans_local_trials(int64_t trials, int64_t kb) {
  if (trials > 0) return trials;
  const int64_t thr[20] = {3, 8, 21, 55, 149, 404, 1097, 2981, 8104, 22027, 59875, 162755, 442414, 1202605,
                           3269018, 8886111, 24154953, 65659970, 178482301, 485165196};
  int64_t m = 0;
  while (m < 20 && kb >= thr[m]) ++m;
  return 2 + m;
}

}  // namespace pointins
#endif /* __cplusplus */

#endif /* POINTINS_KMEANS_H_ */

/*
 * Ragged batched K-means: definitions shared by the CUDA kernels (kernels/kmeans.cu), the CPU
 * implementation (csrc/cpu/kmeans_cpu.cpp) and the reference (pointins/ops/reference.py).
 *
 * Sets are CSR offsets over the points; set b has k_b centroids at rows coff[b]..coff[b+1] of
 * one (sum k_b, D) centroid array. Random draws (initialisation) are a counter-based hash of
 * (seed, set, draw), identical on every backend.
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

}  // namespace pointins
#endif /* __cplusplus */

#endif /* POINTINS_KMEANS_H_ */

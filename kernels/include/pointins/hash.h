/*
 * Open-addressing hash table on non-negative int64 keys (packed voxel keys), linear probing,
 * power-of-two capacity. Slots hold the key (POINTINS_HASH_EMPTY when free) and a value: the
 * smallest input index that inserted that key, so a lookup answers "index of the first point
 * with this key" deterministically, whatever the insertion order.
 *
 * The probe sequence and the hash are shared by the CUDA kernels (kernels/hash.cu) and the CPU
 * implementation; insertion needs an atomic compare-and-swap, which each backend supplies.
 */
#ifndef POINTINS_HASH_H_
#define POINTINS_HASH_H_

#include <stdint.h>

#include "pointins/common.h"

#define POINTINS_HASH_EMPTY (-1LL)

namespace pointins {

/* splitmix64 finaliser: a bijective mixer, so distinct keys stay distinct before masking. */
PI_HD uint64_t hash_mix(uint64_t k) {
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ull;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebull;
  k ^= k >> 31;
  return k;
}

/* Slot holding `key`, or -1. `mask` = capacity - 1. Terminates: the table always has a free slot. */
PI_HD int64_t hash_find(const int64_t* table_keys, int64_t mask, int64_t key) {
  int64_t s = (int64_t)(hash_mix((uint64_t)key) & (uint64_t)mask);
  while (true) {
    const int64_t k = table_keys[s];
    if (k == key) return s;
    if (k == POINTINS_HASH_EMPTY) return -1;
    s = (s + 1) & mask;
  }
}

/* Value stored for `key`, or -1 when absent (negative keys are never stored). */
PI_HD int64_t hash_lookup(const int64_t* table_keys, const int64_t* table_vals, int64_t mask, int64_t key) {
  if (key < 0) return -1;
  const int64_t s = hash_find(table_keys, mask, key);
  return s < 0 ? -1 : table_vals[s];
}

/* A seeded 64-bit hash of (seed, i): the random priority of point i (voxelize train mode). */
PI_HD uint64_t point_priority(uint64_t seed, int64_t i) {
  return hash_mix(hash_mix(seed + 0x9e3779b97f4a7c15ull) ^ (uint64_t)i);
}

/* Random selection packs (priority, index) into one int64 whose minimum picks the point:
   the top 24 bits of the priority above a 39-bit index (up to 5.5e11 points). */
#define POINTINS_SELECT_INDEX_BITS 39
PI_HD int64_t select_pack(uint64_t seed, int64_t i) {
  return (int64_t)((point_priority(seed, i) >> 40) << POINTINS_SELECT_INDEX_BITS) | i;
}
PI_HD int64_t select_index(int64_t packed) {
  return packed & (((int64_t)1 << POINTINS_SELECT_INDEX_BITS) - 1);
}

/* Kernel offsets of a k^3 stencil: index ((dx+r)*k + (dy+r))*k + (dz+r), x slowest. */
PI_HD void kernel_offset(int index, int k, int dilation, int* dx, int* dy, int* dz) {
  const int r = k / 2;
  *dz = (index % k - r) * dilation;
  *dy = ((index / k) % k - r) * dilation;
  *dx = (index / (k * k) - r) * dilation;
}

}  // namespace pointins

#endif /* POINTINS_HASH_H_ */

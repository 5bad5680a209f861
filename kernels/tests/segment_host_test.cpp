// Host-side check of the chunk-slot layout of the two-level segment reduction (segment.h): the
// slot ranges of long segments are disjoint, inside chunk_slots(n), and every used slot maps
// back to its segment; also the CC stencil offsets (components.h) are the 62 positive ones.
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "host_check.h"
#include "pointins/components.h"
#include "pointins/segment.h"


int main() {
  std::mt19937_64 rng(1);
  const int64_t L = POINTINS_SEGMENT_CHUNK;
  for (int trial = 0; trial < 500; ++trial) {
    const int64_t S = 1 + int64_t(rng() % 60);
    std::vector<int64_t> off(S + 1, 0);
    for (int64_t s = 0; s < S; ++s) {
      const uint64_t kind = rng() % 4;  // empty, short, around 2L, long
      const int64_t len = kind == 0 ? 0 : kind == 1 ? int64_t(rng() % (2 * L)) : kind == 2 ? 2 * L - 1 + int64_t(rng() % 3) : int64_t(rng() % (40 * L));
      off[s + 1] = off[s] + len;
    }
    const int64_t n = off[S], slots = pointins::chunk_slots(n);
    std::set<int64_t> used;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t len = off[s + 1] - off[s];
      if (!pointins::chunk_long(len)) continue;
      const int64_t base = pointins::chunk_base(off[s]);
      for (int64_t j = 0; j < pointins::chunk_count(len); ++j) {
        const int64_t q = base + j;
        CHECK(q < slots);
        CHECK(used.insert(q).second);  // disjoint
        CHECK(pointins::chunk_segment(off.data(), S, q) == s);
      }
    }
  }
  std::set<int> seen;
  for (int t = 0; t < POINTINS_CC_HALF_STENCIL; ++t) {
    int dx, dy, dz;
    pointins::cc_offset(t, &dx, &dy, &dz);
    CHECK(dx >= -2 && dx <= 2 && dy >= -2 && dy <= 2 && dz >= -2 && dz <= 2);
    CHECK(dx > 0 || (dx == 0 && (dy > 0 || (dy == 0 && dz > 0))));  // lexicographically positive
    CHECK(seen.insert((dx + 2) * 25 + (dy + 2) * 5 + dz + 2).second);
  }
  std::printf("segment_host_test: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}

// Emulated kernels/serialize.cu: space-filling-curve codes (all orders, several at once), decode,
// and the PTv3 patch padding, against serial references and an independent z-order interleave.
#include "emu_test.h"
#include "pointins/patch.h"
#include "pointins/pointins_kernels.h"
#include "pointins/serialize.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

// Independent z-order: bit d of x, y, z -> bits 3d+2, 3d+1, 3d (x highest), batch above.
int64_t naive_z(int64_t x, int64_t y, int64_t z, int64_t b, int depth) {
  int64_t c = 0;
  for (int d = 0; d < depth; ++d)
    c |= ((x >> d & 1) << (3 * d + 2)) | ((y >> d & 1) << (3 * d + 1)) | ((z >> d & 1) << (3 * d));
  return c | (b << (3 * depth));
}

template <typename T>
void encode_case(const char* what, const std::vector<T>& grid, const std::vector<int64_t>* batch, int depth,
                 const std::vector<int32_t>& orders) {
  const int64_t n = (int64_t)grid.size() / 3;
  const int no = (int)orders.size();
  std::vector<int64_t> ref(no * n);
  int ref_flags = 0;
  for (int o = 0; o < no; ++o)
    for (int64_t i = 0; i < n; ++i)
      ref_flags |= pointins::serialize_encode_one<T>(grid[3 * i], grid[3 * i + 1], grid[3 * i + 2],
                                                     batch ? (*batch)[i] : 0, depth, orders[o], &ref[o * n + i]);
  for_schedules(what, [&] {
    std::vector<int64_t> codes(no * n, -9);
    int32_t flags = 0;
    const int64_t* b = batch ? batch->data() : nullptr;
    if (sizeof(T) == 4)
      EOK(pointins_serialize_encode_i32(reinterpret_cast<const int32_t*>(grid.data()), b, n, depth, orders.data(), no,
                                        codes.data(), &flags, nullptr));
    else
      EOK(pointins_serialize_encode_i64(reinterpret_cast<const int64_t*>(grid.data()), b, n, depth, orders.data(), no,
                                        codes.data(), &flags, nullptr));
    ECHECK(flags == ref_flags, "%s: flags %d, expected %d\n", what, flags, ref_flags);
    ECHECK(codes == ref, "%s: codes differ from serialize_encode_one\n", what);
    if (ref_flags == 0) {
      for (int o = 0; o < no; ++o) {
        if (orders[o] == POINTINS_ORDER_Z)
          for (int64_t i = 0; i < n; ++i)
            ECHECK(codes[o * n + i] == naive_z(grid[3 * i], grid[3 * i + 1], grid[3 * i + 2], b ? b[i] : 0, depth),
                   "%s: z code of %lld\n", what, (long long)i);
        std::vector<int32_t> back(3 * n, -1);
        std::vector<int64_t> bb(n, -1);
        int32_t f2 = 0;
        EOK(pointins_serialize_decode(codes.data() + o * n, n, depth, orders[o], back.data(), bb.data(), &f2, nullptr));
        bool same = f2 == 0;
        for (int64_t i = 0; i < 3 * n; ++i) same = same && back[i] == (int32_t)grid[i];
        for (int64_t i = 0; i < n; ++i) same = same && bb[i] == (b ? b[i] : 0);
        ECHECK(same, "%s: decode(encode) != identity for order %d\n", what, orders[o]);
      }
    }
    std::vector<uint8_t> bytes;
    append(bytes, codes);
    return bytes;
  });
}

EMU_CASE(serialize, encode_decode) {
  std::mt19937_64 rng(17);
  for (int depth : {1, 6, 16, 21}) {
    for (int64_t n : {1, 33, 700}) {
      std::vector<int32_t> g(3 * n);
      std::vector<int64_t> g64(3 * n), batch(n);
      for (int64_t i = 0; i < 3 * n; ++i) g64[i] = g[i] = (int32_t)(rng() % ((uint64_t)1 << depth));
      for (auto& b : batch) b = (int64_t)(rng() % 5);
      encode_case("all orders", g, &batch, depth, {0, 1, 2, 3});
      encode_case("i64, hilbert only", g64, nullptr, depth, {2});
    }
  }
  // Out of range: a coordinate >= 2^depth, a negative one.
  encode_case("overflow", std::vector<int32_t>{0, 0, 0, 64, 1, 1}, nullptr, 6, {0, 2});
  encode_case("negative", std::vector<int64_t>{0, -1, 0}, nullptr, 6, {1, 3});
  std::vector<int32_t> g(3);
  std::vector<int64_t> c(1);
  int32_t flags = 0;
  const int32_t bad_order[] = {4};
  ECHECK(pointins_serialize_encode_i32(g.data(), nullptr, 1, 6, bad_order, 1, c.data(), &flags, nullptr) ==
             cudaErrorInvalidValue,
         "order 4 accepted\n");
  const int32_t nine[9] = {};
  ECHECK(pointins_serialize_encode_i32(g.data(), nullptr, 1, 6, nine, 9, c.data(), &flags, nullptr) ==
             cudaErrorInvalidValue,
         "9 orders accepted\n");
  ECHECK(pointins_serialize_decode(c.data(), 1, 0, 0, g.data(), nullptr, &flags, nullptr) == cudaErrorInvalidValue,
         "depth 0 accepted\n");
  ECHECK(pointins_serialize_decode(c.data(), 1, 6, 7, g.data(), nullptr, &flags, nullptr) == cudaErrorInvalidValue,
         "order 7 accepted\n");
  // A negative code decodes with a flag.
  for_schedules("decode bad", [&] {
    std::vector<int64_t> codes = {5, -3};
    std::vector<int32_t> out(6);
    int32_t f = 0;
    EOK(pointins_serialize_decode(codes.data(), 2, 6, 0, out.data(), nullptr, &f, nullptr));
    ECHECK(f != 0, "negative code decoded without a flag\n");
    return std::vector<uint8_t>();
  });
}

void patch_case(const char* what, const std::vector<int64_t>& sizes, int64_t patch) {
  const std::vector<int64_t> off = emu_test::csr(sizes);
  std::vector<int64_t> psizes(sizes.size());
  for (size_t s = 0; s < sizes.size(); ++s) psizes[s] = pointins::padded_count(sizes[s], patch);
  const std::vector<int64_t> poff = emu_test::csr(psizes);
  const int64_t S = (int64_t)sizes.size(), n = off.back(), total = poff.back();
  std::vector<int64_t> pad_ref(total), unpad_ref(n);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = 0; j < psizes[s]; ++j) {
      // Padding repeats the last full patch's points: slot j of a padded tail reads j - patch.
      pad_ref[poff[s] + j] = off[s] + (j < sizes[s] ? j : j - patch);
    }
    for (int64_t p = 0; p < sizes[s]; ++p) unpad_ref[off[s] + p] = poff[s] + p;
  }
  for_schedules(what, [&] {
    std::vector<int64_t> pad(total, -9), unpad(n, -9);
    EOK(pointins_patch_partition(off.data(), poff.data(), S, n, total, patch, pad.data(), unpad.data(), nullptr));
    ECHECK(pad == pad_ref && unpad == unpad_ref, "%s: pad / unpad differ\n", what);
    for (int64_t j = 0; j < total; ++j) ECHECK(pad[j] >= 0 && pad[j] < n, "%s: pad[%lld] out of range\n", what, (long long)j);
    std::vector<uint8_t> bytes;
    append(bytes, pad);
    append(bytes, unpad);
    return bytes;
  });
}

EMU_CASE(serialize, patch_partition) {
  std::mt19937_64 rng(19);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<int64_t> sizes = emu_test::random_sizes(rng, 1 + 3 * trial, 600);
    patch_case("random clouds", sizes, 48);
    patch_case("patch 1", sizes, 1);
  }
  patch_case("one cloud of many", {1000}, 128);
  patch_case("clouds of one point", std::vector<int64_t>(300, 1), 16);
  patch_case("exact multiples", {256, 512}, 128);
  patch_case("empty batch", {}, 16);
}

}  // namespace

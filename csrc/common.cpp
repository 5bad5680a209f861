#include "common.h"

#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "pointins/common.h"

namespace pointins {

namespace {
std::mutex g_deferred_mu;
std::map<std::string, at::Tensor> g_deferred;  // device string -> int32 accumulator (1,)
std::atomic<bool> g_any_deferred{false};
std::atomic<int64_t> g_flag_reads{0};
}  // namespace

void set_deferred_flags(const c10::optional<at::Tensor>& accumulator, const c10::optional<at::Device>& device) {
  std::lock_guard<std::mutex> lock(g_deferred_mu);
  if (accumulator.has_value()) {
    TORCH_CHECK_VALUE(accumulator->scalar_type() == at::kInt && accumulator->numel() == 1,
                      "pointins: the deferred-flags accumulator must be one int32 element.");
    g_deferred[accumulator->device().str()] = *accumulator;
  } else if (device.has_value()) {
    g_deferred.erase(device->str());
  } else {
    g_deferred.clear();
  }
  g_any_deferred.store(!g_deferred.empty());
}

c10::optional<at::Tensor> deferred_flags_for(const at::Device& device) {
  if (!g_any_deferred.load()) return c10::nullopt;
  std::lock_guard<std::mutex> lock(g_deferred_mu);
  auto it = g_deferred.find(device.str());
  if (it == g_deferred.end()) return c10::nullopt;
  return it->second;
}

int64_t flag_reads() { return g_flag_reads.load(); }
void count_flag_read() { g_flag_reads.fetch_add(1); }

std::string fmt_vec(const at::Tensor& t) {
  // t: small 1-D tensor on any device.
  auto c = t.to(at::kCPU, at::kDouble);
  std::ostringstream os;
  os << "(";
  for (int64_t i = 0; i < c.numel(); ++i) os << (i ? ", " : "") << c[i].item<double>();
  os << ")";
  return os.str();
}

void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn,
                       const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "pointins.", op, ": ", an, " is on ", a.device(),
                    " but ", bn, " is on ", b.device(), "; move both to the same device (e.g. ",
                    bn, " = ", bn, ".to(", an, ".device)).");
}

void check_grid_coord_args(const at::Tensor& coord, const at::Tensor& offsets,
                           at::ArrayRef<double> grid_size) {
  TORCH_CHECK_TYPE(coord.scalar_type() == at::kFloat || coord.scalar_type() == at::kDouble,
                   "pointins.grid_coord: coord must be float32 or float64, got ",
                   coord.scalar_type(),
                   ". Convert with coord.float(); if these are already integer grid "
                   "coordinates, pass them to pack_keys directly.");
  TORCH_CHECK_VALUE(coord.dim() == 2 && coord.size(1) == 3,
                    "pointins.grid_coord: coord must have shape (N, 3), got ", coord.sizes(), ".");
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong,
                   "pointins.grid_coord: offsets must be int64, got ", offsets.scalar_type(),
                   " (offsets.long() converts).");
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.numel() >= 1,
                    "pointins.grid_coord: offsets must be 1-D CSR offsets of length B+1 "
                    "(starting at 0, ending at N), got shape ",
                    offsets.sizes(), ".");
  check_same_device(coord, "coord", offsets, "offsets", "grid_coord");
  TORCH_CHECK_VALUE(grid_size.size() == 3, "pointins.grid_coord: grid_size must have 3 entries "
                    "(one per axis), got ", grid_size.size(), ".");
  for (double g : grid_size) {
    TORCH_CHECK_VALUE(std::isfinite(g) && g > 0, "pointins.grid_coord: grid_size must be finite "
                      "and > 0, got ", grid_size, ".");
  }
}

void check_pack_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch,
                     int64_t bits) {
  TORCH_CHECK_TYPE(grid_coord.scalar_type() == at::kInt || grid_coord.scalar_type() == at::kLong,
                   "pointins.pack_keys: grid_coord must be int32 or int64, got ",
                   grid_coord.scalar_type(),
                   ". Compute integer grid coordinates with pointins.ops.grid_coord(coord, "
                   "offsets, grid_size).");
  TORCH_CHECK_VALUE(grid_coord.dim() == 2 && grid_coord.size(1) == 3,
                    "pointins.pack_keys: grid_coord must have shape (N, 3), got ",
                    grid_coord.sizes(), ".");
  TORCH_CHECK_VALUE(bits >= POINTINS_MIN_KEY_BITS && bits <= POINTINS_MAX_KEY_BITS,
                    "pointins.pack_keys: bits (per axis) must be in [", POINTINS_MIN_KEY_BITS,
                    ", ", POINTINS_MAX_KEY_BITS, "], got ", bits, ".");
  if (batch.has_value()) {
    const auto& b = *batch;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kLong || b.scalar_type() == at::kInt,
                     "pointins.pack_keys: batch must be int64 or int32 per-point sample ids, got ",
                     b.scalar_type(), ".");
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == grid_coord.size(0),
                      "pointins.pack_keys: batch must have shape (N,) = (", grid_coord.size(0),
                      ",), got ", b.sizes(),
                      ". Pass per-point sample ids (or offsets= to the Python wrapper).");
    check_same_device(grid_coord, "grid_coord", b, "batch", "pack_keys");
  }
}

void check_unpack_args(const at::Tensor& keys, int64_t bits) {
  TORCH_CHECK_TYPE(keys.scalar_type() == at::kLong, "pointins.unpack_keys: keys must be int64, got ",
                   keys.scalar_type(), ".");
  TORCH_CHECK_VALUE(keys.dim() == 1, "pointins.unpack_keys: keys must be 1-D, got shape ",
                    keys.sizes(), ".");
  TORCH_CHECK_VALUE(bits >= POINTINS_MIN_KEY_BITS && bits <= POINTINS_MAX_KEY_BITS,
                    "pointins.unpack_keys: bits (per axis) must be in [", POINTINS_MIN_KEY_BITS,
                    ", ", POINTINS_MAX_KEY_BITS, "], got ", bits,
                    " (use the value the keys were packed with).");
}

at::Tensor batch_as_int64(const c10::optional<at::Tensor>& batch) {
  if (!batch.has_value()) return at::Tensor();
  return batch->to(at::kLong).contiguous();
}

void raise_grid_coord_error(int flags, const at::Tensor& coord, const at::Tensor& offsets,
                            at::ArrayRef<double> grid_size) {
  const int64_t n = coord.size(0);
  if (flags & POINTINS_FLAG_BAD_OFFSETS) {
    auto o = offsets.to(at::kCPU);
    const int64_t shown = std::min<int64_t>(o.numel(), 8);
    TORCH_CHECK_VALUE(false, "pointins.grid_coord: offsets are not valid CSR offsets for N = ", n,
                      " points: they must start at 0, never decrease and end at N. Got ",
                      o.numel(), " entries starting ", fmt_vec(o.slice(0, 0, shown)),
                      " and ending at ", o[-1].item<int64_t>(),
                      ". Build them with torch.cat([zeros(1), counts.cumsum(0)]) or pass "
                      "per-point ids as batch=.");
  }
  if (flags & POINTINS_FLAG_NONFINITE) {
    auto bad = ~at::isfinite(coord).all(1);
    const int64_t count = bad.sum().item<int64_t>();
    const int64_t first = bad.to(at::kByte).argmax().item<int64_t>();
    TORCH_CHECK_VALUE(false, "pointins.grid_coord: coord contains NaN or Inf in ", count,
                      " of ", n, " points (first at index ", first,
                      "). Remove them first, e.g. keep = torch.isfinite(coord).all(1); coord = "
                      "coord[keep] (and adjust offsets).");
  }
  if (flags & POINTINS_FLAG_OVERFLOW) {
    auto lo = std::get<0>(coord.min(0));
    auto hi = std::get<0>(coord.max(0));
    TORCH_CHECK_VALUE(false, "pointins.grid_coord: coord / grid_size exceeds the supported "
                      "range of +-2^30 grid cells. Coordinate range per axis: min ",
                      fmt_vec(lo), ", max ", fmt_vec(hi), " at grid_size ", grid_size,
                      ". Check the units (millimetres instead of metres?) or use a larger "
                      "grid_size.");
  }
  TORCH_CHECK(false, "pointins.grid_coord: internal error flag ", flags);
}

void raise_pack_error(int flags, const at::Tensor& grid_coord,
                      const c10::optional<at::Tensor>& batch, int64_t bits) {
  const int64_t lim = (int64_t)1 << bits;
  if (flags & POINTINS_FLAG_NEGATIVE) {
    auto lo = std::get<0>(grid_coord.min(0));
    TORCH_CHECK_VALUE(false, "pointins.pack_keys: grid_coord has negative values (min per axis ",
                      fmt_vec(lo), "). Keys encode 0 <= coordinate < 2^bits; subtract the "
                      "per-sample minimum first (pointins.ops.grid_coord does).");
  }
  if (flags & POINTINS_FLAG_OVERFLOW) {
    auto hi = std::get<0>(grid_coord.max(0));
    const int64_t m = hi.max().item<int64_t>();
    int64_t need = 0;
    while (need < 63 && (((int64_t)1 << need) <= m)) ++need;
    TORCH_CHECK_VALUE(false, "pointins.pack_keys: grid_coord does not fit ", bits,
                      " bits per axis (max per axis ", fmt_vec(hi), ", limit ", lim - 1,
                      "). Use a coarser grid_size, crop the cloud, or pack with bits=", need,
                      need <= POINTINS_MAX_KEY_BITS ? "" : " (more than the 21 bits a key holds)",
                      " if the batch fits in the remaining 63 - 3*bits bits.");
  }
  if (flags & POINTINS_FLAG_BATCH_RANGE) {
    auto b = batch.value();
    TORCH_CHECK_VALUE(false, "pointins.pack_keys: batch ids range over [", b.min().item<int64_t>(),
                      ", ", b.max().item<int64_t>(), "] but with bits=", bits, " per axis a key has ",
                      63 - 3 * bits, " batch bits (ids 0..", (((int64_t)1 << (63 - 3 * bits)) - 1),
                      "). Use fewer samples per call or fewer bits per axis.");
  }
  TORCH_CHECK(false, "pointins.pack_keys: internal error flag ", flags);
}

void raise_unpack_error(int flags, const at::Tensor& keys, int64_t bits) {
  if (flags & POINTINS_FLAG_BAD_KEY) {
    const int64_t count = keys.lt(0).sum().item<int64_t>();
    TORCH_CHECK_VALUE(false, "pointins.unpack_keys: keys contains ", count,
                      " negative values, which pack_keys never produces (bits=", bits,
                      "). Are these keys from pack_keys, or a -1 'missing' marker?");
  }
  TORCH_CHECK(false, "pointins.unpack_keys: internal error flag ", flags);
}

}  // namespace pointins

#include "pointins/hash.h"
#include "pointins/patch.h"
#include "pointins/serialize.h"

namespace pointins {

void check_depth_order(int64_t depth, int64_t order, const char* op) {
  TORCH_CHECK_VALUE(depth >= 1 && depth <= POINTINS_MAX_DEPTH, "pointins.", op, ": depth (bits per axis) must be in [1, ",
                    POINTINS_MAX_DEPTH, "], got ", depth, ".");
  TORCH_CHECK_VALUE(order_valid((int)order), "pointins.", op,
                    ": order must be 0 (z), 1 (z-trans), 2 (hilbert) or 3 (hilbert-trans), got ", order, ".");
}

void check_serialize_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch, int64_t depth,
                          at::IntArrayRef orders) {
  check_pack_args(grid_coord, batch, 1);  // dtype / shape / device of grid_coord and batch
  TORCH_CHECK_VALUE(!orders.empty() && orders.size() <= POINTINS_MAX_ORDERS, "pointins.serialize: between 1 and ",
                    POINTINS_MAX_ORDERS, " orders per call, got ", orders.size(), ".");
  for (auto o : orders) check_depth_order(depth, o, "serialize");
}

void raise_serialize_error(int flags, const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch,
                           int64_t depth) {
  if (flags & POINTINS_FLAG_NEGATIVE) {
    TORCH_CHECK_VALUE(false, "pointins.serialize: grid_coord has negative values (min per axis ",
                      fmt_vec(std::get<0>(grid_coord.min(0))),
                      "). Curves encode 0 <= coordinate < 2^depth; subtract the per-sample minimum first "
                      "(pointins.ops.grid_coord does).");
  }
  if (flags & POINTINS_FLAG_OVERFLOW) {
    auto hi = std::get<0>(grid_coord.max(0));
    const int64_t m = hi.max().item<int64_t>();
    int64_t need = 0;
    while (need < 63 && (((int64_t)1 << need) <= m)) ++need;
    TORCH_CHECK_VALUE(false, "pointins.serialize: grid_coord does not fit depth=", depth,
                      " bits per axis (max per axis ", fmt_vec(hi), "); it needs depth >= ", need,
                      " (depth=None picks the bit length of max + 1, as PTv3 does).");
  }
  if (flags & POINTINS_FLAG_BATCH_RANGE) {
    auto b = batch.value();
    TORCH_CHECK_VALUE(false, "pointins.serialize: batch ids range over [", b.min().item<int64_t>(), ", ",
                      b.max().item<int64_t>(), "] but depth=", depth, " leaves ", 63 - 3 * depth,
                      " bits above the curve code for the batch index.");
  }
  TORCH_CHECK(false, "pointins.serialize: internal error flag ", flags);
}

void check_keys_tensor(const at::Tensor& keys, const char* name, const char* op) {
  TORCH_CHECK_TYPE(keys.scalar_type() == at::kLong, "pointins.", op, ": ", name, " must be int64 (packed keys), got ",
                   keys.scalar_type(), ".");
  TORCH_CHECK_VALUE(keys.dim() == 1, "pointins.", op, ": ", name, " must be 1-D, got shape ", keys.sizes(), ".");
}

int64_t hash_capacity_for(int64_t n) {
  int64_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  return cap;
}

void check_table(const at::Tensor& table_keys, const at::Tensor& table_vals, const char* op) {
  check_keys_tensor(table_keys, "table_keys", op);
  check_keys_tensor(table_vals, "table_vals", op);
  const int64_t cap = table_keys.numel();
  TORCH_CHECK_VALUE(cap >= 1 && (cap & (cap - 1)) == 0 && table_vals.numel() == cap, "pointins.", op,
                    ": table_keys/table_vals must be two int64 arrays of one power-of-two length (from hash_build).");
  check_same_device(table_keys, "table_keys", table_vals, "table_vals", op);
}

void raise_negative_keys(const at::Tensor& keys, const char* op) {
  TORCH_CHECK_VALUE(false, "pointins.", op, ": keys contains ", keys.lt(0).sum().item<int64_t>(),
                    " negative values; the hash table stores non-negative keys only (-1 marks a free slot). Use "
                    "pointins.ops.pack_keys to build keys.");
}

void check_kernel_map_args(const at::Tensor& grid_coord, const c10::optional<at::Tensor>& batch,
                           int64_t kernel_size, int64_t dilation, int64_t bits) {
  check_pack_args(grid_coord, batch, bits);
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size <= 7 && kernel_size % 2 == 1,
                    "pointins.kernel_map: kernel_size must be odd and in [1, 7], got ", kernel_size, ".");
  TORCH_CHECK_VALUE(dilation >= 1 && dilation <= 64, "pointins.kernel_map: dilation must be in [1, 64], got ",
                    dilation, ".");
}

std::vector<int64_t> host_offsets(const at::Tensor& offsets, int64_t n_expected, const char* op) {
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "pointins.", op, ": offsets must be int64, got ",
                   offsets.scalar_type(), ".");
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.numel() >= 1, "pointins.", op,
                    ": offsets must be 1-D CSR offsets of length B+1, got shape ", offsets.sizes(), ".");
  auto o = offsets.to(at::kCPU).contiguous();
  std::vector<int64_t> v(o.data_ptr<int64_t>(), o.data_ptr<int64_t>() + o.numel());
  bool ok = v[0] == 0 && (n_expected < 0 || v.back() == n_expected);
  for (size_t s = 1; ok && s < v.size(); ++s) ok = v[s] >= v[s - 1];
  TORCH_CHECK_VALUE(ok, "pointins.", op, ": offsets are not valid CSR offsets: they must start at 0 and never decrease",
                    n_expected >= 0 ? " and end at N" : "", "; got ", fmt_vec(o.slice(0, 0, std::min<int64_t>(8, o.numel()))),
                    " ending at ", v.back(), ".");
  return v;
}

std::vector<int64_t> padded_offsets(const std::vector<int64_t>& off, int64_t patch_size) {
  std::vector<int64_t> p(off.size(), 0);
  for (size_t s = 0; s + 1 < off.size(); ++s) p[s + 1] = p[s] + padded_count(off[s + 1] - off[s], patch_size);
  return p;
}

}  // namespace pointins

#include "pointins/segment.h"

namespace pointins {

void check_segment_index_args(const at::Tensor& index, int64_t num_segments) {
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "pointins.segment_reduce: index must be int64 segment ids, got ",
                   index.scalar_type(), " (index.long() converts).");
  TORCH_CHECK_VALUE(index.dim() == 1, "pointins.segment_reduce: index must be 1-D (one segment id per row of src), "
                    "got shape ", index.sizes(), ".");
  TORCH_CHECK_VALUE(num_segments >= 0, "pointins.segment_reduce: num_segments must be >= 0, got ", num_segments, ".");
}

void raise_segment_index_range(const at::Tensor& index, int64_t num_segments) {
  const auto bad = index.ge(num_segments);
  TORCH_CHECK_VALUE(false, "pointins.segment_reduce: index has ", bad.sum().item<int64_t>(),
                    " ids >= num_segments = ", num_segments, " (largest ", index.max().item<int64_t>(),
                    ", first bad at row ", bad.to(at::kByte).argmax().item<int64_t>(),
                    "). Pass num_segments=index.max() + 1 (or None to infer it); negative ids are ignored.");
}

int check_segment_csr_args(const at::Tensor& src, const at::Tensor& offsets, const c10::optional<at::Tensor>& perm,
                           c10::string_view reduce, int64_t correction) {
  int code = -1;
  if (reduce == "sum") code = POINTINS_REDUCE_SUM;
  if (reduce == "mean") code = POINTINS_REDUCE_MEAN;
  if (reduce == "max") code = POINTINS_REDUCE_MAX;
  if (reduce == "min") code = POINTINS_REDUCE_MIN;
  if (reduce == "var") code = POINTINS_REDUCE_VAR;
  TORCH_CHECK_VALUE(code >= 0, "pointins.segment_reduce: reduce must be one of 'sum', 'mean', 'max', 'min', 'var', got '",
                    std::string(reduce), "'.");
  TORCH_CHECK_VALUE(correction >= 0, "pointins.segment_reduce: correction must be >= 0, got ", correction, ".");
  const auto t = src.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                   "pointins.segment_reduce: src must be float16, bfloat16, float32 or float64, got ", t,
                   " (src.float() converts).");
  TORCH_CHECK_VALUE(src.dim() == 2, "pointins.segment_reduce: src must be 2-D (N, C) here, got shape ", src.sizes(), ".");
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "pointins.segment_reduce: offsets must be int64, got ",
                   offsets.scalar_type(), ".");
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.numel() >= 1,
                    "pointins.segment_reduce: offsets must be 1-D CSR offsets of length S+1, got shape ",
                    offsets.sizes(), ".");
  check_same_device(src, "src", offsets, "offsets", "segment_reduce");
  if (perm.has_value()) {
    TORCH_CHECK_VALUE(perm->scalar_type() == at::kLong && perm->dim() == 1 && perm->size(0) == src.size(0),
                      "pointins.segment_reduce: perm must be int64 of shape (N,) = (", src.size(0), ",), got ",
                      perm->scalar_type(), " ", perm->sizes(), ".");
    check_same_device(src, "src", *perm, "perm", "segment_reduce");
  }
  return code;
}

void check_segment_coo_args(const at::Tensor& src, const at::Tensor& index, int64_t num_segments) {
  check_segment_index_args(index, num_segments);
  TORCH_CHECK_VALUE(src.dim() < 1 || index.size(0) == src.size(0), "pointins.segment_reduce: index must have shape (",
                    src.size(0), ",) (one id per row of src), got ", index.sizes(), ".");
  check_same_device(src, "src", index, "index", "segment_reduce");
}

at::Tensor segment_aux(int reduce, int64_t num_segments, const at::Tensor& src, bool with_arg) {
  const int64_t C = src.size(1);
  if ((reduce == POINTINS_REDUCE_MAX || reduce == POINTINS_REDUCE_MIN) && with_arg)
    return at::empty({num_segments, C}, src.options().dtype(at::kLong));
  if (reduce == POINTINS_REDUCE_VAR) return at::empty({num_segments, C}, src.options());
  return at::empty({0}, src.options());
}

void raise_segment_offsets_error(const at::Tensor& offsets, int64_t n, bool with_perm) {
  auto o = offsets.to(at::kCPU);
  TORCH_CHECK_VALUE(false, "pointins.segment_reduce: offsets are not valid CSR offsets for N = ", n,
                    " rows: they must start at 0, never decrease and end at ", with_perm ? "most N" : "N", "; got ",
                    o.numel(), " entries starting ", fmt_vec(o.slice(0, 0, std::min<int64_t>(8, o.numel()))),
                    " and ending at ", o[-1].item<int64_t>(),
                    ". Build them as torch.cat([zeros(1), counts.cumsum(0)]) or pass per-row segment ids as index=.");
}

}  // namespace pointins

namespace pointins {

void check_kmeans_args(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& coff, const char* op) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "pointins.", op,
                   ": x must be float32 or float64, got ", x.scalar_type(), " (x.float() converts).");
  TORCH_CHECK_VALUE(x.dim() == 2, "pointins.", op, ": x must have shape (N, D), got ", x.sizes(), ".");
  for (const auto* t : {&offsets, &coff}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong && t->dim() == 1 && t->numel() >= 1, "pointins.", op,
                     ": offsets and centroid offsets must be 1-D int64 CSR offsets, got ", t->scalar_type(), " ",
                     t->sizes(), ".");
    check_same_device(x, "x", *t, "offsets", op);
  }
  TORCH_CHECK_VALUE(offsets.numel() == coff.numel(), "pointins.", op, ": offsets (", offsets.numel(),
                    " entries) and centroid offsets (", coff.numel(), ") must describe the same number of sets.");
}

void check_kmeans_centroids(const at::Tensor& x, const at::Tensor& centroids, const at::Tensor& coff,
                            const c10::optional<at::Tensor>& converged, const char* op) {
  TORCH_CHECK_TYPE(centroids.scalar_type() == x.scalar_type(), "pointins.", op, ": centroids must have x's dtype (",
                   x.scalar_type(), "), got ", centroids.scalar_type(), ".");
  TORCH_CHECK_VALUE(centroids.dim() == 2 && centroids.size(1) == x.size(1), "pointins.", op,
                    ": centroids must have shape (K, ", x.size(1), "), got ", centroids.sizes(), ".");
  check_same_device(x, "x", centroids, "centroids", op);
  if (converged.has_value()) {
    TORCH_CHECK_VALUE(converged->dim() == 1 && converged->numel() == coff.numel() - 1, "pointins.", op,
                      ": converged must have one entry per set.");
    check_same_device(x, "x", *converged, "converged", op);
  }
}

void check_kmeans_update_args(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& coff,
                              const at::Tensor& centroids, const at::Tensor& sums, const at::Tensor& counts,
                              const at::Tensor& converged) {
  check_kmeans_args(x, offsets, coff, "kmeans");
  check_kmeans_centroids(x, centroids, coff, converged, "kmeans");
  TORCH_CHECK_VALUE(sums.sizes() == centroids.sizes() && counts.numel() == centroids.size(0),
                    "pointins.kmeans: sums/counts must come from kmeans_assign(..., accumulate=True).");
}

void check_kmeans_sets(const int64_t* off, const int64_t* coff, int64_t num_sets, int64_t n, const char* op) {
  TORCH_CHECK_VALUE(off[0] == 0 && off[num_sets] == n, "pointins.", op,
                    ": offsets must start at 0 and end at N = ", n, "; got ", off[0], " ... ", off[num_sets], ".");
  TORCH_CHECK_VALUE(coff[0] == 0, "pointins.", op, ": centroid offsets must start at 0.");
  for (int64_t b = 0; b < num_sets; ++b) {
    TORCH_CHECK_VALUE(off[b + 1] >= off[b], "pointins.", op, ": offsets decrease at set ", b, ".");
    const int64_t k = coff[b + 1] - coff[b];
    TORCH_CHECK_VALUE(k >= 0 && k <= off[b + 1] - off[b], "pointins.", op, ": set ", b, " has ", off[b + 1] - off[b],
                      " points but ", k, " clusters; k must be in [0, set size].");
  }
}

}  // namespace pointins

namespace pointins {

void check_components_args(const at::Tensor& coord, const at::Tensor& group, double radius) {
  const char* op = "connected_components";
  TORCH_CHECK_TYPE(coord.scalar_type() == at::kFloat || coord.scalar_type() == at::kDouble, "pointins.", op,
                   ": coord must be float32 or float64, got ", coord.scalar_type(), ".");
  TORCH_CHECK_VALUE(coord.dim() == 2 && coord.size(1) == 3, "pointins.", op, ": coord must have shape (N, 3), got ",
                    coord.sizes(), ".");
  TORCH_CHECK_TYPE(group.scalar_type() == at::kLong, "pointins.", op, ": group must be int64, got ",
                   group.scalar_type(), ".");
  TORCH_CHECK_VALUE(group.dim() == 1 && group.size(0) == coord.size(0), "pointins.", op,
                    ": group must have shape (N,) = (", coord.size(0), ",), got ", group.sizes(), ".");
  check_same_device(coord, "coord", group, "group", op);
  TORCH_CHECK_VALUE(std::isfinite(radius) && radius > 0, "pointins.", op, ": radius must be finite and > 0, got ",
                    radius, ".");
}

void raise_components_error(int flags, const at::Tensor& coord, const at::Tensor& group, double radius, int bits) {
  const char* op = "connected_components";
  const auto valid = group.ge(0);
  if (flags & POINTINS_FLAG_NONFINITE) {
    const auto bad = (~at::isfinite(coord).all(1)) & valid;
    TORCH_CHECK_VALUE(false, "pointins.", op, ": coord contains NaN or Inf in ", bad.sum().item<int64_t>(),
                      " points (first at index ", bad.to(at::kByte).argmax().item<int64_t>(),
                      "). Drop them, or give them group -1 to leave them out.");
  }
  auto c = coord.index({valid});
  TORCH_CHECK_VALUE(false, "pointins.", op, ": the cloud is too large for radius ", radius,
                    ": cells of side radius/sqrt(3) need ", bits ? std::to_string(bits) : std::string("> 21"),
                    " bits per axis (at most ", POINTINS_MAX_KEY_BITS, ") together with ",
                    group.max().item<int64_t>() + 1, " groups in a 63-bit key. Extent: min ",
                    c.numel() ? fmt_vec(std::get<0>(c.min(0))) : std::string("-"), ", max ",
                    c.numel() ? fmt_vec(std::get<0>(c.max(0))) : std::string("-"),
                    ". Split the work (fewer groups or samples per call) or check the units of coord.");
}

}  // namespace pointins

// Emulated kernels/segment.cu: CSR segment reductions (sum, mean, max/min with arg, var) for f32,
// f64, f16 and bf16, with and without a row permutation, short and chunked long segments, against
// a serial double-precision reference; bad offsets are flagged and never read out of bounds.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "emu_test.h"
#include "pointins/pointins_kernels.h"
#include "pointins/segment.h"

namespace {

using emu_test::append;
using emu_test::for_schedules;

template <typename T>
double to_d(T v) {
  return (double)v;
}
template <>
double to_d<__half>(__half v) {
  return (double)__half2float(v);
}
template <>
double to_d<__nv_bfloat16>(__nv_bfloat16 v) {
  return (double)__bfloat162float(v);
}
template <typename T>
T from_d(double v) {
  return (T)v;
}
template <>
__half from_d<__half>(double v) {
  return __float2half_rn((float)v);
}
template <>
__nv_bfloat16 from_d<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn((float)v);
}
template <typename T>
int dtype_code();
template <>
int dtype_code<float>() {
  return POINTINS_F32;
}
template <>
int dtype_code<double>() {
  return POINTINS_F64;
}
template <>
int dtype_code<__half>() {
  return POINTINS_F16;
}
template <>
int dtype_code<__nv_bfloat16>() {
  return POINTINS_BF16;
}
template <typename T>
double rel_tol() {
  return sizeof(T) == 8 ? 1e-12 : sizeof(T) == 4 ? 2e-6 : std::is_same<T, __half>::value ? 2e-3 : 1.6e-2;
}

const char* reduce_name(int r) {
  static const char* names[] = {"sum", "mean", "max", "min", "var"};
  return names[r];
}

template <typename T>
void csr_case(const char* what, int64_t n, int64_t channels, const std::vector<int64_t>& off,
              const std::vector<int64_t>* perm, bool with_nan, std::mt19937_64& rng) {
  const int64_t S = (int64_t)off.size() - 1;
  std::vector<T> src(n * channels);
  std::normal_distribution<double> normal(0.0, 3.0);
  for (auto& v : src) v = from_d<T>(std::round(normal(rng) * 8) / 8);  // repeats: ties in max/min
  if (with_nan && n > 0) src[(n / 2) * channels] = from_d<T>(std::numeric_limits<double>::quiet_NaN());
  for (int reduce = POINTINS_REDUCE_SUM; reduce <= POINTINS_REDUCE_VAR; ++reduce) {
    const int correction = reduce == POINTINS_REDUCE_VAR ? (int)(rng() % 2) : 0;
    // Serial reference in double.
    std::vector<double> ref(S * channels, 0.0), ref_mean(S * channels, 0.0), scale(S * channels, 0.0);
    std::vector<int64_t> ref_arg(S * channels, -1);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < channels; ++c) {
        double sum = 0, abs_sum = 0, best = 0;
        int64_t arg = -1, cnt = 0;
        std::vector<double> vals;
        for (int64_t j = off[s]; j < off[s + 1]; ++j) {
          const int64_t row = perm ? (*perm)[j] : j;
          const double v = to_d(src[row * channels + c]);
          vals.push_back(v);
          sum += v, abs_sum += std::fabs(v), ++cnt;
          const bool better = std::isnan(best) ? false
                              : std::isnan(v)  ? true
                                               : (reduce == POINTINS_REDUCE_MAX ? v > best : v < best);
          if (arg < 0 || better) best = v, arg = row;
        }
        const int64_t at = s * channels + c;
        scale[at] = abs_sum + 1e-30;
        if (reduce == POINTINS_REDUCE_SUM) ref[at] = sum;
        if (reduce == POINTINS_REDUCE_MEAN) ref[at] = cnt ? sum / cnt : 0, scale[at] /= std::max<int64_t>(cnt, 1);
        if (reduce == POINTINS_REDUCE_MAX || reduce == POINTINS_REDUCE_MIN) ref[at] = arg >= 0 ? best : 0, ref_arg[at] = arg;
        if (reduce == POINTINS_REDUCE_VAR) {
          const double m = cnt ? sum / cnt : 0;
          double m2 = 0;
          for (double v : vals) m2 += (v - m) * (v - m);
          ref[at] = cnt > correction ? m2 / (double)(cnt - correction) : 0;
          ref_mean[at] = m;
          scale[at] = (std::fabs(ref[at]) + m * m + 1) * 4;
        }
      }
    std::string label = std::string(what) + " " + reduce_name(reduce);
    for_schedules(label.c_str(), [&] {
      std::vector<T> out(S * channels, from_d<T>(-77)), mean(S * channels, from_d<T>(-77));
      std::vector<int64_t> arg(S * channels, -9);
      std::vector<uint8_t> ws((size_t)pointins_segment_csr_workspace_size(n, channels, S));
      int32_t flags = 0;
      const bool has_arg = reduce == POINTINS_REDUCE_MAX || reduce == POINTINS_REDUCE_MIN;
      EOK(pointins_segment_csr(dtype_code<T>(), src.data(), n, channels, off.data(), S, perm ? perm->data() : nullptr,
                               reduce, correction, out.data(), has_arg ? arg.data() : nullptr,
                               reduce == POINTINS_REDUCE_VAR ? mean.data() : nullptr, ws.empty() ? nullptr : ws.data(),
                               &flags, nullptr));
      ECHECK(flags == 0, "%s: flags %d\n", label.c_str(), flags);
      for (int64_t t = 0; t < S * channels; ++t) {
        const double got = to_d(out[t]);
        if (std::isnan(ref[t])) {
          ECHECK(std::isnan(got), "%s: [%lld] %g, expected NaN\n", label.c_str(), (long long)t, got);
        } else if (has_arg) {
          ECHECK(got == ref[t] && arg[t] == ref_arg[t], "%s: [%lld] %g @%lld, expected %g @%lld\n", label.c_str(),
                 (long long)t, got, (long long)arg[t], ref[t], (long long)ref_arg[t]);
        } else {
          ECHECK(std::fabs(got - ref[t]) <= rel_tol<T>() * scale[t] * 4 + 1e-300, "%s: [%lld] %.9g, expected %.9g\n",
                 label.c_str(), (long long)t, got, ref[t]);
        }
        if (reduce == POINTINS_REDUCE_VAR && !std::isnan(ref_mean[t]))
          ECHECK(std::fabs(to_d(mean[t]) - ref_mean[t]) <= rel_tol<T>() * (std::fabs(ref_mean[t]) + 1) * 8,
                 "%s: mean [%lld]\n", label.c_str(), (long long)t);
      }
      // No atomics: every schedule must give the same bits.
      std::vector<uint8_t> bytes;
      append(bytes, out);
      append(bytes, arg);
      if (reduce == POINTINS_REDUCE_VAR) append(bytes, mean);
      return bytes;
    });
  }
}

template <typename T>
void family(const char* what, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 3; ++trial) {
    std::vector<int64_t> sizes = emu_test::random_sizes(rng, 2 + 4 * trial, 700);
    if (trial == 1) sizes.push_back(2 * POINTINS_SEGMENT_CHUNK);  // exactly the chunking threshold
    if (trial == 2) sizes.push_back(2 * POINTINS_SEGMENT_CHUNK - 1);
    const std::vector<int64_t> off = emu_test::csr(sizes);
    const int64_t n = off.back(), channels = 1 + 2 * trial;
    csr_case<T>(what, n, channels, off, nullptr, trial == 2, rng);
    // A permutation of more rows than the segments cover (offsets end <= n).
    const int64_t extra = 5;
    std::vector<int64_t> perm(n + extra);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    csr_case<T>(what, n + extra, channels, off, &perm, false, rng);
  }
}

EMU_CASE(segment, csr_f32) { family<float>("f32", 21); }
EMU_CASE(segment, csr_f64) { family<double>("f64", 22); }
EMU_CASE(segment, csr_f16_bf16) {
  family<__half>("f16", 23);
  family<__nv_bfloat16>("bf16", 24);
}

EMU_CASE(segment, edge_cases) {
  std::mt19937_64 rng(25);
  csr_case<float>("one segment of many rows", 1500, 2, {0, 1500}, nullptr, false, rng);
  std::vector<int64_t> ones(401);
  std::iota(ones.begin(), ones.end(), 0);
  csr_case<float>("segments of one row", 400, 3, ones, nullptr, false, rng);
  csr_case<double>("all empty", 0, 2, {0, 0, 0, 0}, nullptr, false, rng);
  csr_case<float>("one row", 1, 1, {0, 1}, nullptr, false, rng);
}

EMU_CASE(segment, bad_offsets_flagged_in_bounds) {
  // Offsets that go backwards, past n, below 0, or do not start at 0 / end at n: flagged, and the
  // reductions still read only rows in [0, n) (the AddressSanitizer build checks that).
  const int64_t n = 600, C = 2;
  std::vector<float> src(n * C, 1.0f);
  const std::vector<std::vector<int64_t>> bad = {
      {0, 700, 100, 600}, {0, 300, 5000}, {0, -50, 600}, {3, 300, 600}, {0, 300, 599}, {-9, 2000}};
  for (const auto& off : bad) {
    for_schedules("bad offsets", [&] {
      const int64_t S = (int64_t)off.size() - 1;
      std::vector<float> out(S * C);
      std::vector<int64_t> arg(S * C);
      std::vector<uint8_t> ws((size_t)pointins_segment_csr_workspace_size(n, C, S) + 1);
      for (int reduce = 0; reduce <= POINTINS_REDUCE_VAR; ++reduce) {
        int32_t flags = 0;
        EOK(pointins_segment_csr(POINTINS_F32, src.data(), n, C, off.data(), S, nullptr, reduce, 0, out.data(),
                                 arg.data(), out.data(), ws.data(), &flags, nullptr));
        ECHECK(flags == POINTINS_FLAG_BAD_OFFSETS, "bad offsets not flagged (reduce %d)\n", reduce);
      }
      return std::vector<uint8_t>();
    });
  }
  int32_t flags = 0;
  ECHECK(pointins_segment_csr(9, src.data(), n, C, nullptr, 0, nullptr, 0, 0, nullptr, nullptr, nullptr, nullptr,
                              &flags, nullptr) == cudaErrorInvalidValue,
         "dtype 9 accepted\n");
  ECHECK(pointins_segment_csr(POINTINS_F32, src.data(), n, C, nullptr, 0, nullptr, 7, 0, nullptr, nullptr, nullptr,
                              nullptr, &flags, nullptr) == cudaErrorInvalidValue,
         "reduce 7 accepted\n");
}

EMU_CASE(segment, keys_and_offsets) {
  std::mt19937_64 rng(27);
  for (int64_t n : {1, 100, 1200}) {
    const int64_t S = 1 + (int64_t)(rng() % 40);
    std::vector<int64_t> index(n);
    for (auto& v : index) v = (int64_t)(rng() % (uint64_t)(S + 3)) - 1;  // -1 ignored, >= S flagged
    std::vector<int64_t> ref(n);
    int ref_flags = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref[i] = index[i] < 0 || index[i] >= S ? S : index[i];
      if (index[i] >= S) ref_flags |= POINTINS_FLAG_INDEX_RANGE;
    }
    std::vector<int64_t> sorted = ref;
    std::stable_sort(sorted.begin(), sorted.end());
    std::vector<int64_t> off_ref(S + 1);
    for (int64_t s = 0; s <= S; ++s) off_ref[s] = std::lower_bound(sorted.begin(), sorted.end(), s) - sorted.begin();
    for_schedules("segment keys", [&] {
      std::vector<int64_t> keys(n, -9), off(S + 1, -9);
      int32_t flags = 0;
      EOK(pointins_segment_keys(index.data(), n, S, keys.data(), &flags, nullptr));
      ECHECK(keys == ref && flags == ref_flags, "segment keys / flags\n");
      EOK(pointins_segment_offsets_from_sorted(sorted.data(), n, S, off.data(), nullptr));
      ECHECK(off == off_ref, "offsets from sorted keys\n");
      std::vector<uint8_t> bytes;
      append(bytes, keys);
      append(bytes, off);
      return bytes;
    });
  }
  std::vector<int64_t> off(4, -9);
  EOK(pointins_segment_offsets_from_sorted(nullptr, 0, 3, off.data(), nullptr));
  ECHECK((off == std::vector<int64_t>{0, 0, 0, 0}), "offsets of no keys\n");
}

}  // namespace

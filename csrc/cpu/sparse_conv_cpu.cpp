// CPU sparse convolution for narrow layers: implicit GEMM, output-stationary, on the dense kernel map.
//
//   forward      out[i]  = bias + sum_k x[kmap[i, k]] @ w[k]            (w: K x Cin x Cout)
//   input grad   dx[j]   = sum_k g[kmap_t[j, k]] @ w[k]^T               (the same kernel on the transposed map)
//   weight grad  dw[k]  += x[kmap[i, k]]^T g[i]                          (row chunks, partials added in order)
//
// Each output row keeps its Cout accumulators in registers while it walks its neighbours, so nothing is
// gathered, scattered or allocated per offset: for the 16-64-channel layers of small encoders this beats the
// gather-GEMM-scatter path (pointins/ops/sparse_conv.py), whose per-offset calls are mostly overhead there. Wider
// layers stay on that path (BLAS GEMMs win once a row's work is large). Deterministic for any thread count:
// rows (forward, input grad) and fixed row chunks (weight grad) are the units of work. Accumulation is in
// the input's dtype (float32 or float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_common.h"

namespace pointins {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POINTINS_CONV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define POINTINS_CONV_CLONES
#endif

// GCC/Clang vector extensions: 64-byte vectors (16 floats / 8 doubles) that each target clone lowers to its own
// registers (one zmm on AVX-512, two ymm on AVX2, four xmm otherwise). Written out because the auto-vectoriser
// prefers the Cin reduction (with permutes) over the Cout axis here.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(64)));
  static constexpr int width = 16;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(64)));
  static constexpr int width = 8;
};

template <typename V, typename T>
inline __attribute__((always_inline)) V vload(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline __attribute__((always_inline)) void vstore(T* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// Rows [i0, i1) of the forward with Cout = NV vectors: each row's accumulators stay in registers.
template <typename T, int NV>
inline __attribute__((always_inline)) void rows_vec(const T* x, const int64_t* kmap, const T* w, const T* bias, T* out,
                                                    int64_t i0, int64_t i1, int64_t K, int64_t Cin) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::width, COUT = NV * W;
  for (int64_t i = i0; i < i1; ++i) {
    V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = bias ? vload<V>(bias + v * W) : V{};
    const int64_t* row = kmap + i * K;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = row[k];
      if (j < 0) continue;
      const T* xr = x + j * Cin;
      const T* wr = w + k * Cin * COUT;
      for (int64_t ci = 0; ci < Cin; ++ci, wr += COUT) {
        const V a = V{} + xr[ci];
        for (int v = 0; v < NV; ++v) acc[v] += a * vload<V>(wr + v * W);
      }
    }
    for (int v = 0; v < NV; ++v) vstore(out + i * COUT + v * W, acc[v]);
  }
}

// Any Cout: accumulators in a per-call buffer (accumulated in float for float, double for double).
template <typename T>
inline __attribute__((always_inline)) void rows_any(const T* x, const int64_t* kmap, const T* w, const T* bias, T* out,
                                                    int64_t i0, int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  std::vector<T> acc(Cout);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t c = 0; c < Cout; ++c) acc[c] = bias ? bias[c] : T(0);
    const int64_t* row = kmap + i * K;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = row[k];
      if (j < 0) continue;
      const T* xr = x + j * Cin;
      const T* wk = w + k * Cin * Cout;
      for (int64_t ci = 0; ci < Cin; ++ci) {
        const T a = xr[ci];
        const T* wr = wk + ci * Cout;
        T* ac = acc.data();
        for (int64_t c = 0; c < Cout; ++c) ac[c] += a * wr[c];
      }
    }
    T* o = out + i * Cout;
    for (int64_t c = 0; c < Cout; ++c) o[c] = acc[c];
  }
}

#define POINTINS_ROWS_VEC(T, NV)                                                                                   \
  POINTINS_CONV_CLONES void rows_##T##_##NV(const T* x, const int64_t* kmap, const T* w, const T* bias, T* out,      \
                                            int64_t i0, int64_t i1, int64_t K, int64_t Cin) {                       \
    rows_vec<T, NV>(x, kmap, w, bias, out, i0, i1, K, Cin);                                                         \
  }
POINTINS_ROWS_VEC(float, 1)
POINTINS_ROWS_VEC(float, 2)
POINTINS_ROWS_VEC(float, 3)
POINTINS_ROWS_VEC(float, 4)
POINTINS_ROWS_VEC(double, 1)
POINTINS_ROWS_VEC(double, 2)
POINTINS_ROWS_VEC(double, 3)
POINTINS_ROWS_VEC(double, 4)
#undef POINTINS_ROWS_VEC

POINTINS_CONV_CLONES void rows_any_float(const float* x, const int64_t* kmap, const float* w, const float* bias,
                                         float* out, int64_t i0, int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  rows_any<float>(x, kmap, w, bias, out, i0, i1, K, Cin, Cout);
}
POINTINS_CONV_CLONES void rows_any_double(const double* x, const int64_t* kmap, const double* w, const double* bias,
                                          double* out, int64_t i0, int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  rows_any<double>(x, kmap, w, bias, out, i0, i1, K, Cin, Cout);
}

void conv_rows(const float* x, const int64_t* kmap, const float* w, const float* bias, float* out, int64_t i0,
               int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  switch (Cout) {
    case 16: return rows_float_1(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 32: return rows_float_2(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 48: return rows_float_3(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 64: return rows_float_4(x, kmap, w, bias, out, i0, i1, K, Cin);
    default: return rows_any_float(x, kmap, w, bias, out, i0, i1, K, Cin, Cout);
  }
}
void conv_rows(const double* x, const int64_t* kmap, const double* w, const double* bias, double* out, int64_t i0,
               int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  switch (Cout) {
    case 8: return rows_double_1(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 16: return rows_double_2(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 24: return rows_double_3(x, kmap, w, bias, out, i0, i1, K, Cin);
    case 32: return rows_double_4(x, kmap, w, bias, out, i0, i1, K, Cin);
    default: return rows_any_double(x, kmap, w, bias, out, i0, i1, K, Cin, Cout);
  }
}

// Partial weight gradient of rows [i0, i1) into part (K x Cin x Cout, zeroed by the caller); Cout a multiple of
// the vector width (wgrad() falls back to the scalar loop otherwise).
template <typename T>
inline __attribute__((always_inline)) void wgrad_rows(const T* x, const int64_t* kmap, const T* g, T* part, int64_t i0,
                                                      int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::width;
  const bool vec = Cout % W == 0;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t* row = kmap + i * K;
    const T* gr = g + i * Cout;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = row[k];
      if (j < 0) continue;
      const T* xr = x + j * Cin;
      T* pr = part + k * Cin * Cout;
      for (int64_t ci = 0; ci < Cin; ++ci, pr += Cout) {
        const T a = xr[ci];
        if (vec) {
          const V av = V{} + a;
          for (int64_t c = 0; c < Cout; c += W) vstore(pr + c, vload<V>(pr + c) + av * vload<V>(gr + c));
        } else {
          for (int64_t c = 0; c < Cout; ++c) pr[c] += a * gr[c];
        }
      }
    }
  }
}
POINTINS_CONV_CLONES void wgrad(const float* x, const int64_t* kmap, const float* g, float* part, int64_t i0, int64_t i1,
                                int64_t K, int64_t Cin, int64_t Cout) {
  wgrad_rows<float>(x, kmap, g, part, i0, i1, K, Cin, Cout);
}
POINTINS_CONV_CLONES void wgrad(const double* x, const int64_t* kmap, const double* g, double* part, int64_t i0,
                                int64_t i1, int64_t K, int64_t Cin, int64_t Cout) {
  wgrad_rows<double>(x, kmap, g, part, i0, i1, K, Cin, Cout);
}

void check_x_map(const at::Tensor& x, const at::Tensor& kmap, const char* op) {
  check_cpu(x, "x", op);
  check_cpu(kmap, "kernel_map", op);
  TORCH_CHECK_VALUE(x.dim() == 2, "pointins.", op, ": x must be (N, Cin), got ", x.sizes(), ".");
  TORCH_CHECK_VALUE(kmap.dim() == 2 && kmap.scalar_type() == at::kLong, "pointins.", op,
                    ": kernel_map must be a 2-D int64 map, got ", kmap.scalar_type(), " ", kmap.sizes(), ".");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "pointins.", op,
                   ": float32/float64 only on this path, got ", x.scalar_type(), ".");
}

void check_conv_args(const at::Tensor& x, const at::Tensor& kmap, const at::Tensor& w, const char* op) {
  check_x_map(x, kmap, op);
  check_cpu(w, "weight", op);
  TORCH_CHECK_VALUE(w.dim() == 3 && w.size(0) == kmap.size(1) && w.size(1) == x.size(1), "pointins.", op,
                    ": weight must be (K=", kmap.size(1), ", Cin=", x.size(1), ", Cout), got ", w.sizes(), ".");
  TORCH_CHECK_TYPE(w.scalar_type() == x.scalar_type(), "pointins.", op, ": weight is ", w.scalar_type(),
                   " but x is ", x.scalar_type(), ".");
}

// Entries must be -1 or rows of x (a bad entry must never be dereferenced): one vectorised min/max, skipped when
// the caller vouches for the map (maps from pointins.ops.kernel_map, validate=False).
void check_map_range(const at::Tensor& kmap, int64_t rows, const char* op) {
  if (kmap.numel() == 0) return;
  auto mm = at::aminmax(kmap);
  const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
  TORCH_CHECK_VALUE(lo >= -1 && hi < rows, "pointins.", op, ": kernel_map entries must be -1 or row indices of x (0..",
                    rows - 1, "); got values in [", lo, ", ", hi, "].");
}

at::Tensor sparse_conv_implicit_cpu(const at::Tensor& x_in, const at::Tensor& kmap_in, const at::Tensor& w_in,
                                    const c10::optional<at::Tensor>& bias_in, bool check) {
  check_conv_args(x_in, kmap_in, w_in, "sparse_conv");
  auto x = x_in.contiguous(), kmap = kmap_in.contiguous(), w = w_in.contiguous();
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == w.size(2), "pointins.sparse_conv: bias must be (",
                      w.size(2), ",), got ", bias.sizes(), ".");
    TORCH_CHECK_TYPE(bias.scalar_type() == x.scalar_type(), "pointins.sparse_conv: bias dtype differs from x.");
  }
  if (check) check_map_range(kmap, x.size(0), "sparse_conv");
  const int64_t M = kmap.size(0), K = kmap.size(1), Cin = x.size(1), Cout = w.size(2);
  auto out = at::empty({M, Cout}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_implicit_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* kp = kmap.data_ptr<int64_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, M, 256, [&](int64_t i0, int64_t i1) { conv_rows(xp, kp, wp, bp, op, i0, i1, K, Cin, Cout); });
  });
  return out;
}

at::Tensor sparse_conv_weight_grad_cpu(const at::Tensor& x_in, const at::Tensor& kmap_in, const at::Tensor& g_in,
                                       bool check) {
  check_x_map(x_in, kmap_in, "sparse_conv");
  check_cpu(g_in, "grad", "sparse_conv");
  TORCH_CHECK_VALUE(g_in.dim() == 2 && g_in.size(0) == kmap_in.size(0), "pointins.sparse_conv: grad must be (M=",
                    kmap_in.size(0), ", Cout), got ", g_in.sizes(), ".");
  const int64_t K = kmap_in.size(1), Cin = x_in.size(1), Cout = g_in.size(1);
  auto x = x_in.contiguous(), kmap = kmap_in.contiguous(), g = g_in.contiguous();
  if (check) check_map_range(kmap, x.size(0), "sparse_conv");
  TORCH_CHECK_TYPE(g.scalar_type() == x.scalar_type(), "pointins.sparse_conv: grad dtype differs from x.");
  const int64_t M = kmap.size(0);
  constexpr int64_t kRows = 2048;  // fixed chunks: the sum order does not depend on the thread count
  const int64_t chunks = (M + kRows - 1) / kRows, wsize = K * Cin * Cout;
  auto dw = at::zeros({K, Cin, Cout}, x.options());
  if (chunks == 0) return dw;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_weight_grad_cpu", [&] {
    using A = scalar_t;
    std::vector<A> part((size_t)chunks * wsize, A(0));
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* kp = kmap.data_ptr<int64_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        wgrad(xp, kp, gp, part.data() + c * wsize, c * kRows, std::min(M, (c + 1) * kRows), K, Cin, Cout);
    });
    scalar_t* dp = dw.data_ptr<scalar_t>();
    at::parallel_for(0, wsize, 4096, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        A s = part[e];
        for (int64_t c = 1; c < chunks; ++c) s += part[c * wsize + e];
        dp[e] = (scalar_t)s;
      }
    });
  });
  return dw;
}

// ---- wide layers: gather-GEMM-scatter per kernel offset over the map's pairs ----------------------------------
//
// For offset k with pairs s..e (pairs grouped by offset, rows unique within an offset): gather the inputs' rows,
// one BLAS GEMM with w[k], add the products onto the outputs' rows. A pair list of a submanifold centre that is
// the identity (every row reads itself) is one addmm on x. Gathers and scatters run in parallel (within an
// offset every output row appears once, so no two threads add to the same row); the sums over offsets run in
// offset order, so the result does not depend on the thread count.

template <typename T>
void gather_rows(const T* x, int64_t C, const int64_t* idx, int64_t n, T* out) {
  at::parallel_for(0, n, 512, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy(x + idx[r] * C, x + (idx[r] + 1) * C, out + r * C);
  });
}

template <typename T>
void add_rows(const T* src, int64_t C, const int64_t* idx, int64_t n, T* out) {
  at::parallel_for(0, n, 512, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* o = out + idx[r] * C;
      const T* s = src + r * C;
      for (int64_t c = 0; c < C; ++c) o[c] += s[c];
    }
  });
}

bool is_identity(const int64_t* a, const int64_t* b, int64_t n, int64_t m) {
  if (n != m) return false;
  for (int64_t i = 0; i < n; ++i)
    if (a[i] != i || b[i] != i) return false;
  return true;
}

// out (M, Cout) = bias + sum_k scatter(out_idx, gather(in_idx, x) @ w[k]); w (K, Cin, Cout).
at::Tensor sparse_conv_pairs_cpu(const at::Tensor& x_in, const at::Tensor& in_idx_in, const at::Tensor& out_idx_in,
                                 const at::Tensor& koff_in, const at::Tensor& w_in,
                                 const c10::optional<at::Tensor>& bias_in, int64_t M) {
  check_cpu(x_in, "x", "sparse_conv");
  TORCH_CHECK_TYPE(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
                   "pointins.sparse_conv: float32/float64 only on this path, got ", x_in.scalar_type(), ".");
  auto x = x_in.contiguous(), in_idx = in_idx_in.contiguous(), out_idx = out_idx_in.contiguous();
  auto koff = koff_in.contiguous();
  const at::Tensor& w = w_in;  // any strides: w[k] goes to BLAS as a (possibly transposed) operand, no copy
  const int64_t K = w.size(0), Cin = x.size(1), Cout = w.size(2), N = x.size(0);
  TORCH_CHECK_VALUE(w.dim() == 3 && koff.numel() == K + 1 && w.size(1) == Cin && in_idx.numel() == out_idx.numel(),
                    "pointins.sparse_conv: pair lists, offsets (K+1) and weight (K, Cin, Cout) do not match.");
  TORCH_CHECK_TYPE(w.scalar_type() == x.scalar_type() && w.device().is_cpu(),
                   "pointins.sparse_conv: weight must be a CPU tensor of x's dtype.");
  auto out = at::zeros({M, Cout}, x.options());
  if (bias_in.has_value()) out.add_(bias_in->to(x.scalar_type()));
  const int64_t* ko = koff.data_ptr<int64_t>();
  const int64_t* ii = in_idx.data_ptr<int64_t>();
  const int64_t* oi = out_idx.data_ptr<int64_t>();
  int64_t widest = 0;
  for (int64_t k = 0; k < K; ++k) widest = std::max(widest, ko[k + 1] - ko[k]);
  auto gathered = at::empty({widest, Cin}, x.options()), product = at::empty({widest, Cout}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_pairs_cpu", [&] {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = ko[k], n = ko[k + 1] - s;
      if (n == 0) continue;
      if (is_identity(ii + s, oi + s, n, M) && N == M) {
        out.addmm_(x, w[k]);
        continue;
      }
      gather_rows(x.data_ptr<scalar_t>(), Cin, ii + s, n, gathered.data_ptr<scalar_t>());
      auto p = product.narrow(0, 0, n);
      at::mm_out(p, gathered.narrow(0, 0, n), w[k]);
      add_rows(p.data_ptr<scalar_t>(), Cout, oi + s, n, out.data_ptr<scalar_t>());
    }
  });
  return out;
}

// dw[k] = gather(in_idx, x)^T @ gather(out_idx, g) over offset k's pairs.
at::Tensor sparse_conv_pairs_wgrad_cpu(const at::Tensor& x_in, const at::Tensor& g_in, const at::Tensor& in_idx_in,
                                       const at::Tensor& out_idx_in, const at::Tensor& koff_in) {
  check_cpu(x_in, "x", "sparse_conv");
  auto x = x_in.contiguous(), g = g_in.contiguous(), in_idx = in_idx_in.contiguous();
  auto out_idx = out_idx_in.contiguous(), koff = koff_in.contiguous();
  TORCH_CHECK_TYPE(g.scalar_type() == x.scalar_type(), "pointins.sparse_conv: grad dtype differs from x.");
  const int64_t K = koff.numel() - 1, Cin = x.size(1), Cout = g.size(1);
  auto dw = at::zeros({K, Cin, Cout}, x.options());
  const int64_t* ko = koff.data_ptr<int64_t>();
  const int64_t* ii = in_idx.data_ptr<int64_t>();
  const int64_t* oi = out_idx.data_ptr<int64_t>();
  int64_t widest = 0;
  for (int64_t k = 0; k < K; ++k) widest = std::max(widest, ko[k + 1] - ko[k]);
  auto ga = at::empty({widest, Cin}, x.options()), gb = at::empty({widest, Cout}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_pairs_wgrad_cpu", [&] {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = ko[k], n = ko[k + 1] - s;
      if (n == 0) continue;
      gather_rows(x.data_ptr<scalar_t>(), Cin, ii + s, n, ga.data_ptr<scalar_t>());
      gather_rows(g.data_ptr<scalar_t>(), Cout, oi + s, n, gb.data_ptr<scalar_t>());
      auto dk = dw[k];
      at::mm_out(dk, ga.narrow(0, 0, n).t(), gb.narrow(0, 0, n));
    }
  });
  return dw;
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("sparse_conv_pairs", &pointins::sparse_conv_pairs_cpu);
  m.impl("sparse_conv_pairs_wgrad", &pointins::sparse_conv_pairs_wgrad_cpu);
  m.impl("sparse_conv_implicit", &pointins::sparse_conv_implicit_cpu);
  m.impl("sparse_conv_weight_grad", &pointins::sparse_conv_weight_grad_cpu);
}

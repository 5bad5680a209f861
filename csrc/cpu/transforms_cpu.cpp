// CPU kernels of the view pipeline (pointins/data/transforms.py): the per-point parts of elastic distortion and
// of the hue rotation. Each restates its NumPy expression operation by operation in double, compiled without
// FMA contraction, so the results are bitwise those of the NumPy code (which stays as the reference and the
// fallback; tests/test_data_views.py compares the two).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "cpu_common.h"

namespace pointins {
namespace {

#if defined(__GNUC__) && !defined(__clang__)
#define POINTINS_EXACT __attribute__((optimize("fp-contract=off")))
#else
#define POINTINS_EXACT
#endif

// NumPy's float remainder (npy_divmod) for a positive divisor: the sign of the divisor, +0.0 for an exact zero.
POINTINS_EXACT inline double py_mod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0.0) {
    if ((b < 0) != (m < 0)) m += b;
  } else {
    m = std::copysign(0.0, b);
  }
  return m;
}

// coord + mag * trilinear(lattice, (coord - lo) / gran + 1): the interpolation step of elastic_distortion.
POINTINS_EXACT void displace_rows(const double* c, int64_t i0, int64_t i1, const double* lat, const int64_t* dims,
                                  const double* lo, double gran, double mag, double* out) {
  for (int64_t i = i0; i < i1; ++i) {
    int64_t base[3];
    double f[3], f1[3];
    for (int a = 0; a < 3; ++a) {
      const double g = (c[3 * i + a] - lo[a]) / gran + 1.0;
      int64_t k = (int64_t)std::floor(g);
      k = k < 0 ? 0 : (k > dims[a] - 2 ? dims[a] - 2 : k);
      base[a] = k;
      f[a] = g - (double)k;
      f1[a] = 1 - f[a];
    }
    double disp[3] = {0.0, 0.0, 0.0};
    for (int corner = 0; corner < 8; ++corner) {
      const int ox = (corner >> 2) & 1, oy = (corner >> 1) & 1, oz = corner & 1;
      const double w = (ox ? f[0] : f1[0]) * (oy ? f[1] : f1[1]) * (oz ? f[2] : f1[2]);
      const int64_t idx = ((base[0] + ox) * dims[1] + (base[1] + oy)) * dims[2] + (base[2] + oz);
      for (int a = 0; a < 3; ++a) {
        const double t = w * lat[3 * idx + a];
        disp[a] = disp[a] + t;
      }
    }
    for (int a = 0; a < 3; ++a) {
      const double t = disp[a] * mag;
      out[3 * i + a] = c[3 * i + a] + t;
    }
  }
}

at::Tensor elastic_displace_cpu(const at::Tensor& coord_in, const at::Tensor& lattice_in, at::ArrayRef<double> lo,
                                double gran, double mag) {
  check_cpu(coord_in, "coord", "elastic_distortion");
  check_cpu(lattice_in, "lattice", "elastic_distortion");
  TORCH_CHECK_VALUE(coord_in.dim() == 2 && coord_in.size(1) == 3 && coord_in.scalar_type() == at::kDouble,
                    "pointins.elastic_distortion: coord must be float64 (N, 3), got ", coord_in.scalar_type(), " ",
                    coord_in.sizes(), ".");
  TORCH_CHECK_VALUE(lattice_in.dim() == 4 && lattice_in.size(3) == 3 && lattice_in.scalar_type() == at::kDouble &&
                        lattice_in.size(0) >= 2 && lattice_in.size(1) >= 2 && lattice_in.size(2) >= 2,
                    "pointins.elastic_distortion: lattice must be float64 (X >= 2, Y >= 2, Z >= 2, 3), got ",
                    lattice_in.sizes(), ".");
  TORCH_CHECK_VALUE(lo.size() == 3 && gran > 0, "pointins.elastic_distortion: lo needs 3 values and gran > 0.");
  auto coord = coord_in.contiguous(), lattice = lattice_in.contiguous();
  const int64_t n = coord.size(0);
  const int64_t dims[3] = {lattice.size(0), lattice.size(1), lattice.size(2)};
  auto out = at::empty_like(coord);
  const double* c = coord.data_ptr<double>();
  const double* lat = lattice.data_ptr<double>();
  double* o = out.data_ptr<double>();
  const double lo3[3] = {lo[0], lo[1], lo[2]};
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) { displace_rows(c, i0, i1, lat, dims, lo3, gran, mag, o); });
  return out;
}

// The hue rotation of random_color_jitter: colour / 255 -> HSV (colorsys' formulas) -> hue + shift (mod 1) ->
// RGB (channels clipped to [0, 1]) -> x 255, as float32.
POINTINS_EXACT void hue_rows(const float* in, int64_t i0, int64_t i1, double shift, float* out) {
  for (int64_t i = i0; i < i1; ++i) {
    const double r = (double)in[3 * i] / 255.0, g = (double)in[3 * i + 1] / 255.0, b = (double)in[3 * i + 2] / 255.0;
    const double mx = std::fmax(std::fmax(r, g), b), mn = std::fmin(std::fmin(r, g), b);
    const bool eq = mx == mn;
    const double cr = mx - mn, div = eq ? 1.0 : cr;
    const double rc = (mx - r) / div, gc = (mx - g) / div, bc = (mx - b) / div;
    const double h0 = mx == r ? bc - gc : (mx == g ? 2.0 + rc - bc : 4.0 + gc - rc);
    double h = py_mod(h0 / 6.0 + 1.0, 1.0);
    const double s = cr / (eq ? 1.0 : mx), v = mx;
    h = py_mod(h + shift, 1.0);
    const double fi = std::floor(h * 6.0);
    const double f = h * 6.0 - fi;
    int64_t sector = ((int64_t)fi) % 6;
    if (sector < 0) sector += 6;
    auto clip01 = [](double x) { return x < 0 ? 0.0 : (x > 1 ? 1.0 : x); };
    const double p = clip01(v * (1.0 - s)), q = clip01(v * (1.0 - s * f)), t = clip01(v * (1.0 - s * (1.0 - f)));
    double rgb[3];
    switch (sector) {
      case 0: rgb[0] = v, rgb[1] = t, rgb[2] = p; break;
      case 1: rgb[0] = q, rgb[1] = v, rgb[2] = p; break;
      case 2: rgb[0] = p, rgb[1] = v, rgb[2] = t; break;
      case 3: rgb[0] = p, rgb[1] = q, rgb[2] = v; break;
      case 4: rgb[0] = t, rgb[1] = p, rgb[2] = v; break;
      default: rgb[0] = v, rgb[1] = p, rgb[2] = q; break;
    }
    for (int a = 0; a < 3; ++a) out[3 * i + a] = (float)(rgb[a] * 255.0);
  }
}

at::Tensor hue_shift_cpu(const at::Tensor& color_in, double shift) {
  check_cpu(color_in, "color", "random_color_jitter");
  TORCH_CHECK_VALUE(color_in.dim() == 2 && color_in.size(1) == 3 && color_in.scalar_type() == at::kFloat,
                    "pointins.random_color_jitter: color must be float32 (N, 3), got ", color_in.scalar_type(), " ",
                    color_in.sizes(), ".");
  auto color = color_in.contiguous();
  auto out = at::empty_like(color);
  const float* c = color.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, color.size(0), 4096, [&](int64_t i0, int64_t i1) { hue_rows(c, i0, i1, shift, o); });
  return out;
}

}  // namespace
}  // namespace pointins

TORCH_LIBRARY_IMPL(pointins, CPU, m) {
  m.impl("elastic_displace", &pointins::elastic_displace_cpu);
  m.impl("hue_shift", &pointins::hue_shift_cpu);
}

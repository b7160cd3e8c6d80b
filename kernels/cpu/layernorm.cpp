// LayerNorm over rows: y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) with the
// biased variance (as PyTorch). The residual-add variant normalises h = x + residual, writing h too.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

namespace {

// One row: xr -> yr, and its statistics.
template <class T>
void normalize_row(const T* xr, const T* gamma, const T* beta, T eps, T* yr, T& mean, T& rstd, std::int64_t c) {
  double m = 0.0;
#pragma omp simd reduction(+ : m)
  for (std::int64_t i = 0; i < c; ++i) m += xr[i];
  m /= static_cast<double>(c);
  double v = 0.0;
#pragma omp simd reduction(+ : v)
  for (std::int64_t i = 0; i < c; ++i) v += (xr[i] - m) * (xr[i] - m);
  v /= static_cast<double>(c);
  const double s = 1.0 / std::sqrt(v + static_cast<double>(eps));
  const T mt = static_cast<T>(m), st = static_cast<T>(s);
  for (std::int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - mt) * st * gamma[i] + beta[i];
  mean = mt;
  rstd = st;
}

// One row of dx (see layernorm_backward). A function of its own, on plain pointers, so that both loops
// vectorise with contiguous loads: written inline in the parallel_for's lambda, the first loop was
// compiled into gathers.
template <class T>
void backward_row(const T* dyr, const T* xr, const T* gamma, T mean, T rstd, const T* dsr, T* dxr, std::int64_t c) {
  const double m = mean, s = rstd;
  double g_mean = 0.0, gx_mean = 0.0;
#pragma omp simd reduction(+ : g_mean, gx_mean)
  for (std::int64_t i = 0; i < c; ++i) {
    const double xhat = (xr[i] - m) * s;
    const double g = double(dyr[i]) * double(gamma[i]);
    g_mean += g;
    gx_mean += g * xhat;
  }
  g_mean /= static_cast<double>(c);
  gx_mean /= static_cast<double>(c);
  for (std::int64_t i = 0; i < c; ++i) {
    const double xhat = (xr[i] - m) * s;
    const double g = double(dyr[i]) * double(gamma[i]);
    dxr[i] = static_cast<T>(s * (g - g_mean - xhat * gx_mean));
  }
  if (dsr != nullptr) {
    for (std::int64_t i = 0; i < c; ++i) dxr[i] += dsr[i];
  }
}

// One row of layernorm_double_backward (formulas there), on plain pointers like backward_row so that
// the loops vectorise. Returns the row's mean(a) and mean(a * xhat) for the dgamma2 pass.
template <class T>
void double_backward_row(const T* dyr, const T* xr, const T* gamma, T mean, T rstd, const T* ar, const T* gg,
                         const T* gb, T* ddyr, T* dxr, double& a_mean, double& axhat_mean, std::int64_t c) {
  const double m = mean, s = rstd, inv_c = 1.0 / static_cast<double>(c);
  double sg = 0, sgx = 0, sa = 0, sax = 0, sag = 0, sbd = 0, sbdx = 0, sx = 0;
#pragma omp simd reduction(+ : sg, sgx, sa, sax, sag, sbd, sbdx, sx)
  for (std::int64_t i = 0; i < c; ++i) {
    const double xhat = (xr[i] - m) * s, g = double(dyr[i]) * double(gamma[i]), a = ar[i];
    const double bd = double(gg[i]) * double(dyr[i]);
    sg += g;
    sgx += g * xhat;
    sa += a;
    sax += a * xhat;
    sag += a * g;
    sbd += bd;
    sbdx += bd * xhat;
    sx += xhat;
  }
  const double g_mean = sg * inv_c, gx_mean = sgx * inv_c, a_m = sa * inv_c, ax_mean = sax * inv_c;
  const double adx_mean = s * (sag * inv_c - a_m * g_mean - ax_mean * gx_mean);  // mean(a * dx)
  const double u = (sbdx * inv_c - 2.0 * s * ax_mean * gx_mean) + adx_mean;
  // The row mean of rstd * (X - xhat * u), to centre dx2.
  const double centre = s * ((sbd * inv_c - s * (a_m * gx_mean + g_mean * ax_mean)) - sx * inv_c * u);
  // The outputs are fresh tensors: the pragma spares the compiler run-time alias checks between 2
  // outputs and 6 inputs, more than it will version a loop for (it left this loop scalar).
#pragma omp simd
  for (std::int64_t i = 0; i < c; ++i) {
    const double xhat = (xr[i] - m) * s, g = double(dyr[i]) * double(gamma[i]), a = ar[i];
    const double q = s * (a - a_m - xhat * ax_mean);
    ddyr[i] = static_cast<T>(double(gb[i]) + double(gg[i]) * xhat + double(gamma[i]) * q);
    const double big_x = double(gg[i]) * double(dyr[i]) - s * (a * gx_mean + g * ax_mean);
    dxr[i] = static_cast<T>(s * (big_x - xhat * u) - centre);
  }
  a_mean = a_m;
  axhat_mean = ax_mean;
}

}  // namespace

template <class T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T eps, T* y, T* mean, T* rstd, std::int64_t rows,
                       std::int64_t c) {
  parallel_for(rows, grain_for(6 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) normalize_row(x + r * c, gamma, beta, eps, y + r * c, mean[r], rstd[r], c);
  });
}

template <class T>
void add_layernorm_forward(const T* x, const T* residual, const T* gamma, const T* beta, T eps, T* sum, T* y, T* mean,
                           T* rstd, std::int64_t rows, std::int64_t c) {
  parallel_for(rows, grain_for(7 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      T* hr = sum + r * c;
      for (std::int64_t i = 0; i < c; ++i) hr[i] = x[r * c + i] + residual[r * c + i];
      normalize_row(hr, gamma, beta, eps, y + r * c, mean[r], rstd[r], c);  // h is still in cache
    }
  });
}

// With xhat = (x - mean) * rstd and g = dy * gamma:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum_rows dy * xhat,  dbeta = sum_rows dy.
// Two passes, each split into independent chunks: dx by rows, then dgamma and dbeta by columns (each
// column summed over the rows in order).
template <class T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, const T* dsum, T* dx,
                        T* dgamma, T* dbeta, std::int64_t rows, std::int64_t c) {
  parallel_for(rows, grain_for(10 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      backward_row(dy + r * c, x + r * c, gamma, mean[r], rstd[r], dsum != nullptr ? dsum + r * c : nullptr, dx + r * c,
                   c);
    }
  });
  constexpr std::int64_t kColumns = 32;
  parallel_for((c + kColumns - 1) / kColumns, grain_for(4 * rows * kColumns), [&](std::int64_t k0, std::int64_t k1) {
    double dg[kColumns], db[kColumns];
    for (std::int64_t k = k0; k < k1; ++k) {
      const std::int64_t i0 = k * kColumns, width = std::min(kColumns, c - i0);
      std::fill(dg, dg + width, 0.0);
      std::fill(db, db + width, 0.0);
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* dyr = dy + r * c + i0;
        const T* xr = x + r * c + i0;
        const double m = mean[r], s = rstd[r];
        for (std::int64_t i = 0; i < width; ++i) {
          dg[i] += double(dyr[i]) * ((xr[i] - m) * s);
          db[i] += dyr[i];
        }
      }
      for (std::int64_t i = 0; i < width; ++i) {
        dgamma[i0 + i] = static_cast<T>(dg[i]);
        dbeta[i0 + i] = static_cast<T>(db[i]);
      }
    }
  });
}

// Second order: ga, gg, gb ([rows, C], [C], [C]) are gradients of layernorm_backward's dx, dgamma,
// dbeta; they are taken back to its inputs dy, x, gamma (ddy, dx2 [rows, C], dgamma2 [C], overwritten).
// Per row, with xhat and g as above and a = ga's row:
//   q    = rstd * (a - mean(a) - xhat * mean(a * xhat))                 (the gradient reaching g)
//   ddy  = gb + gg * xhat + gamma * q
//   X    = gg * dy - rstd * (a * mean(g * xhat) + g * mean(a * xhat))  (the gradient reaching xhat)
//   u    = mean(X * xhat) + mean(a * dx)                                (xhat's and dx's pull on rstd)
//   dx2  = rstd * (X - xhat * u), centred (minus its row mean)
//   dgamma2 = sum over rows of q * dy.
// Every row mean comes from one pass of sums (mean(X * xhat) and mean(X) expand into them); dgamma2
// is then summed by columns as in layernorm_backward, from each row's mean(a) and mean(a * xhat).
template <class T>
void layernorm_double_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, const T* ga,
                               const T* gg, const T* gb, T* ddy, T* dx2, T* dgamma2, std::int64_t rows,
                               std::int64_t c) {
  std::vector<double> a_mean(static_cast<std::size_t>(rows)), axhat_mean(a_mean.size());
  parallel_for(rows, grain_for(24 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const auto k = static_cast<std::size_t>(r);
      double_backward_row(dy + r * c, x + r * c, gamma, mean[r], rstd[r], ga + r * c, gg, gb, ddy + r * c, dx2 + r * c,
                          a_mean[k], axhat_mean[k], c);
    }
  });
  constexpr std::int64_t kColumns = 32;
  parallel_for((c + kColumns - 1) / kColumns, grain_for(6 * rows * kColumns), [&](std::int64_t k0, std::int64_t k1) {
    double acc[kColumns];
    for (std::int64_t k = k0; k < k1; ++k) {
      const std::int64_t i0 = k * kColumns, width = std::min(kColumns, c - i0);
      std::fill(acc, acc + width, 0.0);
      for (std::int64_t r = 0; r < rows; ++r) {
        const T* dyr = dy + r * c + i0;
        const T* xr = x + r * c + i0;
        const T* ar = ga + r * c + i0;
        const double m = mean[r], s = rstd[r];
        const double a_m = a_mean[static_cast<std::size_t>(r)], ax_mean = axhat_mean[static_cast<std::size_t>(r)];
        for (std::int64_t i = 0; i < width; ++i) {
          const double xhat = (xr[i] - m) * s;
          acc[i] += s * (double(ar[i]) - a_m - xhat * ax_mean) * double(dyr[i]);
        }
      }
      for (std::int64_t i = 0; i < width; ++i) dgamma2[i0 + i] = static_cast<T>(acc[i]);
    }
  });
}

#define TG_INSTANTIATE(T)                                                                                       \
  template void layernorm_forward<T>(const T*, const T*, const T*, T, T*, T*, T*, std::int64_t, std::int64_t); \
  template void add_layernorm_forward<T>(const T*, const T*, const T*, const T*, T, T*, T*, T*, T*, std::int64_t, \
                                         std::int64_t);                                                        \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,   \
                                      std::int64_t, std::int64_t);                                              \
  template void layernorm_double_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, \
                                             const T*, T*, T*, T*, std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

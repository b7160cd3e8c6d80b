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

#define TG_INSTANTIATE(T)                                                                                       \
  template void layernorm_forward<T>(const T*, const T*, const T*, T, T*, T*, T*, std::int64_t, std::int64_t); \
  template void add_layernorm_forward<T>(const T*, const T*, const T*, const T*, T, T*, T*, T*, T*, std::int64_t, \
                                         std::int64_t);                                                        \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,   \
                                      std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

// Row softmax, max-subtracted for stability.
#include <cmath>

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/kernels.h"

namespace tg::cpu {

template <class T>
void softmax_forward(const T* x, T* y, std::int64_t rows, std::int64_t n) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    T max = xr[0];
    for (std::int64_t j = 1; j < n; ++j) max = xr[j] > max ? xr[j] : max;
    for (std::int64_t j = 0; j < n; ++j) yr[j] = exp_approx(xr[j] - max);  // vectorised
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (std::int64_t j = 0; j < n; ++j) total += yr[j];
    const T inv = static_cast<T>(1.0 / total);
    for (std::int64_t j = 0; j < n; ++j) yr[j] *= inv;
  }
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t n) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * n;
    const T* dyr = dy + r * n;
    T* dxr = dx + r * n;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (std::int64_t j = 0; j < n; ++j) dot += double(dyr[j]) * double(yr[j]);
    const T s = static_cast<T>(dot);
    for (std::int64_t j = 0; j < n; ++j) dxr[j] = yr[j] * (dyr[j] - s);
  }
}

#define TG_INSTANTIATE(T)                                                          \
  template void softmax_forward<T>(const T*, T*, std::int64_t, std::int64_t);      \
  template void softmax_backward<T>(const T*, const T*, T*, std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

// Fused log-softmax + negative log-likelihood per row, and its gradient (softmax - onehot) * dl.
#include <cmath>

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/kernels.h"

namespace tg::cpu {

template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* targets, T* losses, T* lse, T* mean, std::int64_t n,
                           std::int64_t v) {
  double sum = 0.0;
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = logits + r * v;
    T max = row[0];
    for (std::int64_t j = 1; j < v; ++j) max = row[j] > max ? row[j] : max;
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (std::int64_t j = 0; j < v; ++j) total += exp_approx(row[j] - max);
    const double l = double(max) + std::log(total);
    lse[r] = static_cast<T>(l);
    losses[r] = static_cast<T>(l - double(row[targets[r]]));
    sum += losses[r];
  }
  mean[0] = static_cast<T>(1.0 / static_cast<double>(n)) * static_cast<T>(sum);
}

template <class T>
void cross_entropy_backward(const T* logits, const std::int32_t* targets, const T* lse, T dloss_times_scale,
                            T* dlogits, std::int64_t n, std::int64_t v) {
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = logits + r * v;
    T* out = dlogits + r * v;
    const T shift = lse[r];
    for (std::int64_t j = 0; j < v; ++j) out[j] = exp_approx(row[j] - shift) * dloss_times_scale;
    out[targets[r]] -= dloss_times_scale;
  }
}

#define TG_INSTANTIATE(T)                                                                                      \
  template void cross_entropy_forward<T>(const T*, const std::int32_t*, T*, T*, T*, std::int64_t, std::int64_t); \
  template void cross_entropy_backward<T>(const T*, const std::int32_t*, const T*, T, T*, std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

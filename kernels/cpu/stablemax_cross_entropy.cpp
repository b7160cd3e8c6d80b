// StableMax cross-entropy per row and its gradient: softmax's exp replaced by
//   s(x) = x + 1 (x >= 0),  1 / (1 - x) (x < 0),
// written branch-free as s(x) = (1 + pos(x)) / (1 - neg(x)) with pos, neg the parts of x on either side
// of 0 (exact on both sides: one of them is 0). NaN stays NaN through every formula, so a diverged
// run still shows a non-finite loss.
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace tg::cpu {

namespace {

template <class T> T pos_part(T x) { return x >= T(0) ? x : T(0); }
template <class T> T neg_part(T x) { return x >= T(0) ? T(0) : x; }  // NaN -> NaN

}  // namespace

template <class T>
void stablemax_cross_entropy_forward(const T* logits, const std::int32_t* targets, T* losses, T* sums, T* mean,
                                     std::int64_t n, std::int64_t v) {
  double sum = 0.0;
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = logits + r * v;
    // s(x) is at most |x| + 1, so the row's sum needs no shift; double keeps small terms next to big ones.
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (std::int64_t j = 0; j < v; ++j) {
      const double x = row[j];
      total += (1.0 + pos_part(x)) / (1.0 - neg_part(x));
    }
    sums[r] = static_cast<T>(total);
    // log s(x_t) = log1p(pos) - log1p(-neg): no cancellation near 0.
    const double xt = row[targets[r]];
    const double log_st = std::log1p(pos_part(xt)) - std::log1p(-neg_part(xt));
    losses[r] = static_cast<T>(std::log(total) - log_st);
    sum += losses[r];
  }
  mean[0] = static_cast<T>(1.0 / static_cast<double>(n)) * static_cast<T>(sum);
}

// d loss_r / d x_j = s'(x_j) / S_r - [j == t] s'(x_t) / s(x_t), with s'(x) = 1 / (1 - neg(x))^2 and
// s'(x) / s(x) = 1 / (1 + |x|) on both sides of 0.
template <class T>
void stablemax_cross_entropy_backward(const T* logits, const std::int32_t* targets, const T* sums,
                                      T dloss_times_scale, T* dlogits, std::int64_t n, std::int64_t v) {
  for (std::int64_t r = 0; r < n; ++r) {
    const T* row = logits + r * v;
    T* out = dlogits + r * v;
    const T total = sums[r];
    for (std::int64_t j = 0; j < v; ++j) {
      const T q = T(1) - neg_part(row[j]);
      out[j] = T(1) / (q * q) / total * dloss_times_scale;
    }
    const std::int32_t t = targets[r];
    const T q = T(1) - neg_part(row[t]);
    out[t] = (T(1) / (q * q) / total - T(1) / (T(1) + std::fabs(row[t]))) * dloss_times_scale;
  }
}

#define TG_INSTANTIATE(T)                                                                                 \
  template void stablemax_cross_entropy_forward<T>(const T*, const std::int32_t*, T*, T*, T*, std::int64_t, \
                                                   std::int64_t);                                        \
  template void stablemax_cross_entropy_backward<T>(const T*, const std::int32_t*, const T*, T, T*, std::int64_t, \
                                                    std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

// Grokfast gradient filters (arXiv 2405.20233) as single passes over flat buffers
// (MethodKernels::grokfast_ema / grokfast_ma; optim/grokfast.h holds the state and the step logic).
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace tg::cpu {

namespace {

// Neumaier's compensated addition: (sum + comp) tracks the exact running total to about one
// rounding of the total, however many terms are added and removed.
template <class T>
inline void compensated_add(T& sum, T& comp, T x) {
  const T t = sum + x;
  if (std::fabs(sum) >= std::fabs(x)) {
    comp += (sum - t) + x;
  } else {
    comp += (x - t) + sum;
  }
  sum = t;
}

}  // namespace

template <class T>
void grokfast_ema(T* g, T* mu, std::int64_t n, T alpha, T lambda, bool first_step) {
  if (first_step) {
    for (std::int64_t i = 0; i < n; ++i) {
      mu[i] = g[i];
      g[i] += lambda * mu[i];
    }
    return;
  }
  const T keep = T(1) - alpha;
  for (std::int64_t i = 0; i < n; ++i) {
    mu[i] = alpha * mu[i] + keep * g[i];
    g[i] += lambda * mu[i];
  }
}

template <class T>
void grokfast_ma(T* g, T* slot, T* sum, T* comp, std::int64_t n, T lambda, std::int64_t window, bool evict,
                 bool amplify) {
  const T w = static_cast<T>(window);
  for (std::int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    T s = sum[i], e = comp[i];
    compensated_add(s, e, gi);
    if (evict) compensated_add(s, e, -slot[i]);
    slot[i] = gi;
    sum[i] = s;
    comp[i] = e;
    if (amplify) g[i] = gi + lambda * ((s + e) / w);
  }
}

#define TG_INSTANTIATE(T)                                                          \
  template void grokfast_ema<T>(T*, T*, std::int64_t, T, T, bool);                 \
  template void grokfast_ma<T>(T*, T*, T*, T*, std::int64_t, T, std::int64_t, bool, bool);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

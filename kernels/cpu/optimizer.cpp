// Optimizer and clipping passes over flat parameter buffers. The arithmetic follows PyTorch's
// single-tensor (foreach=False) Adam/AdamW/SGD so results agree with torch.optim to float rounding.
#include <cmath>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

namespace {

// clip_by_norm's coefficient (GradClip in engine/backend.h): min(1, max_norm / (norm + 1e-6)), or
// inactive when there is no norm or the coefficient is at least 1. A NaN norm stays active, as in
// clip_by_norm, so the fused and separate clips agree even on a broken step (both give NaN).
template <class T>
struct ClipScale {
  bool active = false;
  T coef = T(1);
};
template <class T>
ClipScale<T> clip_scale(const T* norm, T max_norm) {
  if (norm == nullptr) return {};
  const T coef = max_norm / (*norm + T(1e-6));
  return {!(coef >= T(1)), coef};
}

// Runs update(offset, g_chunk, length) over [0, n) in chunks. With an active clip each chunk's
// gradients are scaled into a small stack buffer first: g * coef is then rounded on its own, exactly
// as the separate clip pass stores it, where a single loop would let the compiler contract g * coef
// + wd * p into one fused multiply-add and change the last bit. The buffer stays in L1.
template <class T, class Update>
void for_each_clipped_chunk(const T* g, std::int64_t n, ClipScale<T> clip, Update&& update) {
  if (!clip.active) {
    update(std::int64_t{0}, g, n);
    return;
  }
  constexpr std::int64_t kChunk = 1024;
  T clipped[kChunk];
  for (std::int64_t begin = 0; begin < n; begin += kChunk) {
    const std::int64_t len = n - begin < kChunk ? n - begin : kChunk;
    for (std::int64_t j = 0; j < len; ++j) clipped[j] = g[begin + j] * clip.coef;
    update(begin, static_cast<const T*>(clipped), len);
  }
}

// The Adam loop on the step's derived constants (adam_device_scalars, rounded to T), which both entry
// points pass: the host-scalar one computes them, the device-scalar one reads them.
template <class T>
void adam_loop(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& s, T step_size, T sqrt_bc2, T decay) {
  const T b1 = static_cast<T>(s.beta1), b2 = static_cast<T>(s.beta2), wd = static_cast<T>(s.weight_decay);
  const T eps = static_cast<T>(s.eps);
  for (std::int64_t i = 0; i < n; ++i) {
    T grad = g[i];
    if (s.decoupled_weight_decay) {
      p[i] *= decay;
    } else {
      grad += wd * p[i];
    }
    m[i] = b1 * m[i] + (T(1) - b1) * grad;
    v[i] = b2 * v[i] + (T(1) - b2) * grad * grad;
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + eps);
  }
}

template <class T>
void adam_clipped(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& s, T step_size, T sqrt_bc2, T decay,
                  ClipScale<T> clip) {
  // Elementwise, so any split gives the same numbers.
  parallel_for(n, grain_for(16), [&](std::int64_t i0, std::int64_t i1) {
    for_each_clipped_chunk(g + i0, i1 - i0, clip, [&](std::int64_t o, const T* gc, std::int64_t len) {
      adam_loop(p + i0 + o, gc, m + i0 + o, v + i0 + o, len, s, step_size, sqrt_bc2, decay);
    });
  });
}

template <class T>
void sgd_loop(T* p, const T* g, T* buf, std::int64_t n, T lr, T momentum, T weight_decay, bool first_step) {
  for (std::int64_t i = 0; i < n; ++i) {
    const T grad = g[i] + weight_decay * p[i];
    if (momentum != T(0)) {
      buf[i] = first_step ? grad : momentum * buf[i] + grad;
      p[i] -= lr * buf[i];
    } else {
      p[i] -= lr * grad;
    }
  }
}

}  // namespace

template <class T>
void adam_update(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& s, const T* clip_norm, T max_norm) {
  const auto c = adam_device_scalars(s);
  adam_clipped(p, g, m, v, n, s, static_cast<T>(c[0]), static_cast<T>(c[1]), static_cast<T>(c[2]),
               clip_scale(clip_norm, max_norm));
}

template <class T>
void adam_update_device(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& fixed, const T* scalars,
                        const T* clip_norm, T max_norm) {
  adam_clipped(p, g, m, v, n, fixed, scalars[0], scalars[1], scalars[2], clip_scale(clip_norm, max_norm));
}

template <class T>
void sgd_update(T* p, const T* g, T* buf, std::int64_t n, T lr, T momentum, T weight_decay, bool first_step,
                const T* clip_norm, T max_norm) {
  for_each_clipped_chunk(g, n, clip_scale(clip_norm, max_norm), [&](std::int64_t o, const T* gc, std::int64_t len) {
    sgd_loop(p + o, gc, buf == nullptr ? nullptr : buf + o, len, lr, momentum, weight_decay, first_step);
  });
}

template <class T>
void sgd_update_device(T* p, const T* g, T* buf, std::int64_t n, const T* scalars, T momentum, T weight_decay,
                       const T* clip_norm, T max_norm) {
  sgd_update(p, g, buf, n, scalars[0], momentum, weight_decay, scalars[1] != T(0), clip_norm, max_norm);
}

template <class T>
void clip_by_norm(T* x, std::int64_t n, T norm, T max_norm) {
  const T coef = max_norm / (norm + T(1e-6));
  if (coef >= T(1)) return;
  for (std::int64_t i = 0; i < n; ++i) x[i] *= coef;
}

template <class T>
void segmented_reduce(ReduceOp op, const T* x, const std::int64_t* offsets, std::int64_t segments, T* out) {
  for (std::int64_t s = 0; s < segments; ++s) reduce_all(op, x + offsets[s], out + s, offsets[s + 1] - offsets[s]);
}

template <class T>
void segmented_scale(T* x, const std::int64_t* offsets, std::int64_t segments, const T* scales) {
  for (std::int64_t s = 0; s < segments; ++s) {
    for (std::int64_t i = offsets[s]; i < offsets[s + 1]; ++i) x[i] *= scales[s];
  }
}

#define TG_INSTANTIATE(T)                                                                                     \
  template void adam_update<T>(T*, const T*, T*, T*, std::int64_t, const AdamStep&, const T*, T);              \
  template void sgd_update<T>(T*, const T*, T*, std::int64_t, T, T, T, bool, const T*, T);                     \
  template void adam_update_device<T>(T*, const T*, T*, T*, std::int64_t, const AdamStep&, const T*, const T*, T); \
  template void sgd_update_device<T>(T*, const T*, T*, std::int64_t, const T*, T, T, const T*, T);             \
  template void clip_by_norm<T>(T*, std::int64_t, T, T);                                                      \
  template void segmented_reduce<T>(ReduceOp, const T*, const std::int64_t*, std::int64_t, T*);               \
  template void segmented_scale<T>(T*, const std::int64_t*, std::int64_t, const T*);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

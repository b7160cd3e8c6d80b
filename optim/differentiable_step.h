// Optimizer updates written in recorded ops, so that a derivative can flow through a training step:
// into the parameters before the step, into the gradient that drove it, and from there into
// whatever produced that gradient (a learned gradient transform, for instance).
//
// They compute the same update as optim/optimizer.h (up to float rounding) but out of place and on
// per-parameter tensor lists, at the price of a few recorded ops per parameter tensor. Used inside a
// window of unrolled steps; the fused flat-buffer optimizers remain the fast path for plain training.
#pragma once

#include "engine/tape.h"
#include "optim/optimizer.h"

namespace tg {

// params - lr * grads
TensorList sgd_update(const TensorList& params, const TensorList& grads, double lr);

// Adam / AdamW moments carried between differentiable steps (tape tensors inside a window).
struct AdamMoments {
  TensorList m, v;
  std::int64_t steps = 0;
  static AdamMoments zeros_like(const TensorList& params);
};

// One Adam (or AdamW) update; advances `moments`. sqrt(v_hat) is taken as sqrt(v_hat + 1e-30): equal
// in value to float precision, but with a finite derivative where a gradient entry has been exactly
// zero (an embedding row no example used), where the exact derivative would be inf * 0 = NaN.
TensorList adam_update(const TensorList& params, const TensorList& grads, AdamMoments& moments,
                       const AdamConfig& config, double lr);

}  // namespace tg

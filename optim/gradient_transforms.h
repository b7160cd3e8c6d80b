// Whole-model gradient transforms over the flat gradient buffer (each a fixed number of passes).
#pragma once

#include "engine/backend.h"
#include "engine/parameters.h"

namespace tg {

// ||all gradients||_2 as a one-element tensor on the parameters' device.
Tensor global_grad_norm(const ParameterTable& params);

// Scales every gradient by min(1, max_norm / (norm + 1e-6)) like torch.nn.utils.clip_grad_norm_.
// Returns the norm before clipping.
Tensor clip_grad_norm(const ParameterTable& params, double max_norm);
// The same clip left to the optimizer's update kernel (Optimizer::step with a GradClip): computes the
// norm now (one reduction on the device) and saves clip_grad_norm's separate pass over the gradients.
GradClip deferred_clip_grad_norm(const ParameterTable& params, double max_norm);

// Per-tensor normalisation g' = c * g / ||g|| for each parameter tensor on its own (NeuralGrok, Fig. 2).
// A tensor whose gradient is exactly zero stays zero.
void normalize_grads_per_tensor(const ParameterTable& params, double c);

}  // namespace tg

// NeuralGrok's gradient amplifier as one fused, differentiable op (optim/neural_amplify.cpp). It
// follows the contract of the engine's ops (engine/ops.h): validate, dispatch, record on the tape with
// a backward rule; its kernels are the method kernels (optim/method_kernels.h).
#pragma once

#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"
#include "optim/method_kernels.h"

namespace tg {

// g: [N] flat; weights: the amplifier MLP's [W0 [h1, 1], b0 [h1], W1 [h2, h1], b1 [h2], ..., Wk [1, hk],
// bk [1]] with ReLU between layers; segments sorted and disjoint. For each segment s and i in s:
//   out_i = c * p_i g_i / ||p g||_s,  p = softmax over s of mlp(g_i);   out = 0 outside every segment
//   and on a segment whose gradient is all zero (where the formula would give 0 / 0).
// `path` picks how the kernels evaluate the MLP, forward and backward (the same function to rounding).
// Differentiable in g and in the weights (first order; a second derivative fails loudly).
Tensor neural_amplify(const Tensor& g, const TensorList& weights, const std::vector<Segment>& segments, double c,
                      MlpPath path = MlpPath::automatic);

}  // namespace tg

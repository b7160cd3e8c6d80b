// Second-order derivatives by replaying the tape backward twice (reverse-over-reverse).
//
// grad(..., {.create_graph = true}) records the backward pass itself on the tape, so the gradients
// it returns are ordinary tape tensors that can be differentiated again. Everything below is built
// on that one mechanism; docs/architecture.md explains the choice and its cost.
#pragma once

#include "engine/tape.h"

namespace tg {

// H v for H = d^2 loss / d params^2 (loss recorded on the tape, one element), one tensor per param.
// Costs one differentiable backward plus one backward through it (about 2-4x a plain gradient).
// The returned tensors are not recorded (pass create_graph in `options` to differentiate them again).
TensorList hessian_vector_product(const Tensor& loss, const TensorList& params, const TensorList& v,
                                  BackwardOptions options = {});

}  // namespace tg

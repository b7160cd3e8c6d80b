#include "optim/gradient_transforms.h"

#include <fmt/format.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

Tensor global_grad_norm(const ParameterTable& params) {
  NoGradGuard no_grad;
  return l2_norm(params.flat_grads());
}

Tensor clip_grad_norm(const ParameterTable& params, double max_norm) {
  TG_CHECK(max_norm > 0, "clip_grad_norm: max norm must be positive, got {}", max_norm);
  Tensor norm = global_grad_norm(params);
  backend_for(params.device()).clip_by_norm(params.flat_grads(), norm, max_norm);
  params.flat_grads().storage()->bump_version();
  return norm;
}

GradClip deferred_clip_grad_norm(const ParameterTable& params, double max_norm) {
  TG_CHECK(max_norm > 0, "clip_grad_norm: max norm must be positive, got {}", max_norm);
  return GradClip{global_grad_norm(params), max_norm};
}

void normalize_grads_per_tensor(const ParameterTable& params, double c) {
  NoGradGuard no_grad;
  Backend& be = backend_for(params.device());
  const auto segments = static_cast<std::int64_t>(params.size());
  Tensor squares = Tensor::empty({segments}, params.dtype(), params.device());
  be.segmented_reduce(ReduceOp::sum_squares, params.flat_grads(), params.offsets(), squares);
  // c / sqrt(||g||^2 + 1e-24): equal to c / ||g|| to float precision whenever ||g|| >> 1e-12, and
  // finite (the gradient stays 0) for an all-zero tensor.
  Tensor scales = div(Tensor::full({segments}, c, params.dtype(), params.device()), sqrt(add_scalar(squares, 1e-24)));
  be.segmented_scale(params.flat_grads(), params.offsets(), scales);
  params.flat_grads().storage()->bump_version();
}

}  // namespace tg

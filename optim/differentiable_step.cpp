#include "optim/differentiable_step.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

namespace {
void check_lists(const char* op, const TensorList& params, const TensorList& grads) {
  TG_CHECK(params.size() == grads.size(), "{}: {} gradients for {} parameters", op, grads.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    TG_CHECK(params[i].shape() == grads[i].shape(), "{}: gradient {} is {} but parameter {} is {}", op, i,
             grads[i].str(), i, params[i].str());
  }
}
}  // namespace

TensorList sgd_update(const TensorList& params, const TensorList& grads, double lr) {
  check_lists("sgd_update", params, grads);
  TensorList out;
  out.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) out.push_back(sub(params[i], scale(grads[i], lr)));
  return out;
}

AdamMoments AdamMoments::zeros_like(const TensorList& params) {
  AdamMoments m;
  for (const Tensor& p : params) {
    m.m.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    m.v.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }
  return m;
}

TensorList adam_update(const TensorList& params, const TensorList& grads, AdamMoments& moments,
                       const AdamConfig& c, double lr) {
  check_lists("adam_update", params, grads);
  TG_CHECK(moments.m.size() == params.size() && moments.v.size() == params.size(),
           "adam_update: moments for {} tensors, parameters {}", moments.m.size(), params.size());
  ++moments.steps;
  const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(moments.steps));
  const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(moments.steps));
  TensorList out;
  out.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i], g = grads[i];
    if (c.decoupled_weight_decay) {
      p = scale(p, 1.0 - lr * c.weight_decay);
    } else if (c.weight_decay != 0.0) {
      g = add(g, scale(p, c.weight_decay));
    }
    moments.m[i] = add(scale(moments.m[i], c.beta1), scale(g, 1.0 - c.beta1));
    moments.v[i] = add(scale(moments.v[i], c.beta2), scale(square(g), 1.0 - c.beta2));
    // p - lr / bc1 * m / (sqrt(v / bc2) + eps)
    const Tensor denominator = add_scalar(sqrt(add_scalar(scale(moments.v[i], 1.0 / bc2), 1e-30)), c.eps);
    out.push_back(sub(p, scale(div(moments.m[i], denominator), lr / bc1)));
  }
  return out;
}

}  // namespace tg

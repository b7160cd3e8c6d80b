// LayerNorm over the last dimension: one fused kernel forward (saving per-row mean and 1/std), one
// fused kernel backward producing dx, dgamma and dbeta together.
//
// Second order: when the backward pass is itself recorded (create_graph), the backward rule computes
// the same gradients from differentiable primitives instead of the fused kernel, recomputing the
// statistics from x, so every derivative of every order flows through the tape.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// The fused first-order backward (not recorded). x, gamma contiguous.
TensorList layernorm_backward_fused(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                    const Tensor& rstd) {
  const std::int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor dgamma = Tensor::empty({c}, x.dtype(), x.device());
  Tensor dbeta = Tensor::empty({c}, x.dtype(), x.device());
  const Tensor dyc = dy.contiguous();
  backend_of(x).layernorm_backward(dyc.as_strided({rows, c}, {c, 1}, dyc.offset()),
                                   x.as_strided({rows, c}, {c, 1}, x.offset()), gamma, mean, rstd,
                                   dx.as_strided({rows, c}, {c, 1}, 0), dgamma, dbeta);
  return {dx, dgamma, dbeta};
}

// The same gradients from recorded primitives (differentiable to any order). With xhat = (x - mean) * rstd
// and g = dy * gamma:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
// dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy.
TensorList layernorm_backward_composite(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps) {
  const Tensor centered = sub(x, mean(x, -1, true));
  const Tensor variance = mean(square(centered), -1, true);
  const Tensor one = Tensor::full({}, 1.0, x.dtype(), x.device());
  const Tensor rstd = div(one, sqrt(add_scalar(variance, eps)));
  const Tensor xhat = mul(centered, rstd);
  const Tensor g = mul(dy, gamma);
  const Tensor dx = mul(rstd, sub(sub(g, mean(g, -1, true)), mul(xhat, mean(mul(g, xhat), -1, true))));
  const Shape c{x.size(-1)};
  return {dx, sum_to(mul(dy, xhat), c), sum_to(dy, c)};
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_floating("layernorm", x, "x");
  check_floating("layernorm", gamma, "gamma");
  check_floating("layernorm", beta, "beta");
  check_same("layernorm", {{&x, "x"}, {&gamma, "gamma"}, {&beta, "beta"}});
  TG_CHECK(x.dim() >= 1 && x.size(-1) > 0, "layernorm: x {} needs a non-empty last dimension", x.str());
  const std::int64_t c = x.size(-1);
  TG_CHECK(gamma.shape() == Shape{c} && beta.shape() == Shape{c},
           "layernorm: gamma {} and beta {} must both be [{}] to match x {}", gamma.str(), beta.str(), c, x.str());
  TG_CHECK(eps > 0.0, "layernorm: eps must be positive, got {}", eps);
  const std::int64_t rows = x.numel() / c;

  const Tensor xc = x.contiguous(), gc = gamma.contiguous(), bc = beta.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (rows > 0) {
    backend_of(x).layernorm_forward(xc.as_strided({rows, c}, {c, 1}, xc.offset()), gc, bc, eps,
                                    y.as_strided({rows, c}, {c, 1}, 0), mean, rstd);
  }
  TensorList outputs{y};
  tape().record("layernorm", {x, gamma, beta}, outputs,
                [x, gamma, xc, gc, mean, rstd, eps](const TensorList& g, const std::vector<bool>&) {
                  if (grad_mode_enabled()) return layernorm_backward_composite(g[0], x, gamma, eps);
                  return layernorm_backward_fused(g[0], xc, gc, mean, rstd);
                });
  return outputs[0];
}

}  // namespace tg

// LayerNorm over the last dimension: one fused kernel forward (saving per-row mean and 1/std), one
// fused kernel backward producing dx, dgamma and dbeta together.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// (dx, dgamma, dbeta) of layernorm given dy. An op so that the tape can hold it; its own derivative
// (second order through layernorm) is not provided yet and fails loudly.
TensorList layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                              const Tensor& rstd) {
  const std::int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor dgamma = Tensor::empty({c}, x.dtype(), x.device());
  Tensor dbeta = Tensor::empty({c}, x.dtype(), x.device());
  const Tensor dyc = dy.contiguous();
  backend_of(x).layernorm_backward(dyc.as_strided({rows, c}, {c, 1}, dyc.offset()),
                                   x.as_strided({rows, c}, {c, 1}, x.offset()), gamma, mean, rstd,
                                   dx.as_strided({rows, c}, {c, 1}, 0), dgamma, dbeta);
  TensorList outputs{dx, dgamma, dbeta};
  tape().record("layernorm_backward", {dy, x, gamma}, outputs, no_backward_rule("layernorm_backward"));
  return outputs;
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
                [xc, gc, mean, rstd](const TensorList& g, const std::vector<bool>&) {
                  return layernorm_backward(g[0], xc, gc, mean, rstd);
                });
  return outputs[0];
}

}  // namespace tg

// LayerNorm over the last dimension: one fused kernel forward (saving per-row mean and 1/std), one
// fused kernel backward producing dx, dgamma and dbeta together. add_layernorm puts the residual add
// in front of it: the forward writes h = x + residual and normalises it in the same pass, and the
// backward adds the gradient h receives from its other uses into dx in the same kernel.
//
// Second order: when the backward pass is itself recorded (create_graph), the backward rule computes
// the same gradients from differentiable primitives instead of the fused kernel, recomputing the
// statistics from x, so every derivative of every order flows through the tape.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// The fused first-order backward (not recorded). x, gamma contiguous; dsum undefined or x's shape
// (added to dx).
TensorList layernorm_backward_fused(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                    const Tensor& rstd, const Tensor& dsum = Tensor()) {
  const std::int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor dgamma = Tensor::empty({c}, x.dtype(), x.device());
  Tensor dbeta = Tensor::empty({c}, x.dtype(), x.device());
  const Tensor dyc = dy.contiguous();
  Tensor dsum2;
  if (dsum.defined()) {
    const Tensor dsc = dsum.contiguous();
    dsum2 = dsc.as_strided({rows, c}, {c, 1}, dsc.offset());
  }
  backend_of(x).layernorm_backward(dyc.as_strided({rows, c}, {c, 1}, dyc.offset()),
                                   x.as_strided({rows, c}, {c, 1}, x.offset()), gamma, mean, rstd, dsum2,
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

void check_layernorm_args(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_floating(op, x, "x");
  check_floating(op, gamma, "gamma");
  check_floating(op, beta, "beta");
  check_same(op, {{&x, "x"}, {&gamma, "gamma"}, {&beta, "beta"}});
  TG_CHECK(x.dim() >= 1 && x.size(-1) > 0, "{}: x {} needs a non-empty last dimension", op, x.str());
  const std::int64_t c = x.size(-1);
  TG_CHECK(gamma.shape() == Shape{c} && beta.shape() == Shape{c},
           "{}: gamma {} and beta {} must both be [{}] to match x {}", op, gamma.str(), beta.str(), c, x.str());
  TG_CHECK(eps > 0.0, "{}: eps must be positive, got {}", op, eps);
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_layernorm_args("layernorm", x, gamma, beta, eps);
  const std::int64_t c = x.size(-1);
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

AddLayerNorm add_layernorm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                           double eps, bool sum_is_used) {
  check_layernorm_args("add_layernorm", x, gamma, beta, eps);
  check_floating("add_layernorm", residual, "residual");
  check_same("add_layernorm", {{&x, "x"}, {&residual, "residual"}});
  TG_CHECK(residual.shape() == x.shape(), "add_layernorm: residual {} must have the shape of x {}", residual.str(),
           x.str());
  const std::int64_t c = x.size(-1);
  const std::int64_t rows = x.numel() / c;

  const Tensor xc = x.contiguous(), rc = residual.contiguous(), gc = gamma.contiguous(), bc = beta.contiguous();
  Tensor h = Tensor::empty(x.shape(), x.dtype(), x.device());  // x + residual
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (rows > 0) {
    backend_of(x).add_layernorm_forward(xc.as_strided({rows, c}, {c, 1}, xc.offset()),
                                        rc.as_strided({rows, c}, {c, 1}, rc.offset()), gc, bc, eps,
                                        h.as_strided({rows, c}, {c, 1}, 0), y.as_strided({rows, c}, {c, 1}, 0), mean,
                                        rstd);
  }
  // Outputs (h, y), or y alone, with gradients (dh, dy): h's total gradient is dh + layernorm's dx,
  // and both summands of h receive it unchanged.
  TensorList outputs = sum_is_used ? TensorList{h, y} : TensorList{y};
  tape().record("add_layernorm", {x, residual, gamma, beta}, outputs,
                [x, residual, h, gamma, gc, mean, rstd, eps, sum_is_used](const TensorList& g, const std::vector<bool>&) {
                  const Tensor& dy = g.back();
                  const Tensor dsum = sum_is_used ? g[0] : Tensor();
                  // Recorded (second order): the composite derivative must see h as a function of x and
                  // the residual — the op's output when it is one, else the sum recorded anew.
                  TensorList ln = grad_mode_enabled()
                                      ? layernorm_backward_composite(dy, sum_is_used ? h : add(x, residual), gamma, eps)
                                      : layernorm_backward_fused(dy, h, gc, mean, rstd, dsum);
                  const Tensor dh = grad_mode_enabled() && dsum.defined() ? add(dsum, ln[0]) : ln[0];
                  return TensorList{dh, dh, ln[1], ln[2]};
                });
  return sum_is_used ? AddLayerNorm{outputs[0], outputs[1]} : AddLayerNorm{h.detach(), outputs[0]};
}

}  // namespace tg

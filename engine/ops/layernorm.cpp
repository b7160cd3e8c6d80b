// LayerNorm over the last dimension: one fused kernel forward (saving per-row mean and 1/std), one
// fused kernel backward producing dx, dgamma and dbeta together. add_layernorm puts the residual add
// in front of it: the forward writes h = x + residual and normalises it in the same pass, and the
// backward adds the gradient h receives from its other uses into dx in the same kernel.
//
// Second order: when the backward pass is itself recorded (create_graph), the backward rule records
// layernorm_backward, an op whose forward is that same fused kernel and whose backward is the fused
// second-derivative kernel (layernorm_double_backward), using the statistics the forward saved. A third
// derivative is not provided: the model's GELU and attention have none either.
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

// (dx, dgamma, dbeta) from the fused kernel, recorded when grad mode is on. x, gamma: the tensors the
// tape knows; xc, gc: them contiguous; mean, rstd: x's saved statistics.
LayerNormGrads layernorm_backward_op(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& xc,
                                     const Tensor& gc, const Tensor& mean, const Tensor& rstd) {
  TensorList outputs = layernorm_backward_fused(dy, xc, gc, mean, rstd);
  const Tensor dyc = dy.contiguous();
  tape().record("layernorm_backward", {dy, x, gamma}, outputs,
                [dyc, xc, gc, mean, rstd](const TensorList& g, const std::vector<bool>&) {
                  if (grad_mode_enabled()) return no_backward_rule("layernorm_backward")(g, {});
                  const std::int64_t c = xc.size(-1), rows = xc.numel() / c;
                  Tensor ddy = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
                  Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
                  Tensor dgamma = Tensor::empty({c}, xc.dtype(), xc.device());
                  const Tensor gdx = g[0].contiguous();
                  auto rows_of = [&](const Tensor& t) { return t.as_strided({rows, c}, {c, 1}, t.offset()); };
                  backend_of(xc).layernorm_double_backward(rows_of(dyc), rows_of(xc), gc, mean, rstd, rows_of(gdx),
                                                           g[1].contiguous(), g[2].contiguous(), rows_of(ddy),
                                                           rows_of(dx), dgamma);
                  return TensorList{ddy, dx, dgamma};
                });
  return LayerNormGrads{outputs[0], outputs[1], outputs[2]};
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
                [x, gamma, xc, gc, mean, rstd](const TensorList& g, const std::vector<bool>&) {
                  if (grad_mode_enabled()) {
                    const LayerNormGrads d = layernorm_backward_op(g[0], x, gamma, xc, gc, mean, rstd);
                    return TensorList{d.dx, d.dgamma, d.dbeta};
                  }
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
                [x, residual, h, gamma, gc, mean, rstd, sum_is_used](const TensorList& g, const std::vector<bool>&) {
                  const Tensor& dy = g.back();
                  const Tensor dsum = sum_is_used ? g[0] : Tensor();
                  if (!grad_mode_enabled()) {
                    const TensorList ln = layernorm_backward_fused(dy, h, gc, mean, rstd, dsum);
                    return TensorList{ln[0], ln[0], ln[1], ln[2]};
                  }
                  // Recorded (second order): layernorm_backward must see h as a function of x and the
                  // residual — the op's output when it is one, else the sum recorded anew (the same
                  // values, so the saved statistics hold).
                  const LayerNormGrads d =
                      layernorm_backward_op(dy, sum_is_used ? h : add(x, residual), gamma, h, gc, mean, rstd);
                  const Tensor dh = dsum.defined() ? add(dsum, d.dx) : d.dx;
                  return TensorList{dh, dh, d.dgamma, d.dbeta};
                });
  return sum_is_used ? AddLayerNorm{outputs[0], outputs[1]} : AddLayerNorm{h.detach(), outputs[0]};
}

LayerNormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps) {
  const char* op = "layernorm_backward";
  check_floating(op, dy, "dy");
  check_floating(op, x, "x");
  check_floating(op, gamma, "gamma");
  check_same(op, {{&dy, "dy"}, {&x, "x"}, {&gamma, "gamma"}});
  TG_CHECK(x.dim() >= 1 && x.size(-1) > 0, "{}: x {} needs a non-empty last dimension", op, x.str());
  TG_CHECK(dy.shape() == x.shape(), "{}: dy {} must have the shape of x {}", op, dy.str(), x.str());
  const std::int64_t c = x.size(-1), rows = x.numel() / c;
  TG_CHECK(gamma.shape() == Shape{c}, "{}: gamma {} must be [{}] to match x {}", op, gamma.str(), c, x.str());
  TG_CHECK(eps > 0.0, "{}: eps must be positive, got {}", op, eps);
  // The statistics the forward would have saved (a forward pass; its y is not needed).
  const Tensor xc = x.contiguous(), gc = gamma.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  if (rows > 0) {
    backend_of(x).layernorm_forward(xc.as_strided({rows, c}, {c, 1}, xc.offset()), gc,
                                    Tensor::zeros({c}, x.dtype(), x.device()), eps,
                                    y.as_strided({rows, c}, {c, 1}, 0), mean, rstd);
  }
  return layernorm_backward_op(dy, x, gamma, xc, gc, mean, rstd);
}

}  // namespace tg

// Activations. relu and gelu are unary ops (elementwise.cpp); their derivatives run as one fused
// kernel each (dy * act'(x)), exposed here as ops so that second-order derivatives pass through:
//   relu_backward(x, dy): linear in dy; zero derivative in x (almost everywhere).
//   gelu_backward(x, dy): linear in dy; d/dx = dy * gelu''(x).
// bias_gelu(x, b) = gelu(x + b) runs one kernel each way; its recorded backward (second order) is
// gelu_backward(x + b, dy), so it needs no rule of its own beyond those.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

Tensor activation_backward(UnaryOp act, const char* name, const Tensor& x, const Tensor& dy) {
  check_floating(name, x, "x");
  check_floating(name, dy, "dy");
  check_same(name, {{&x, "x"}, {&dy, "dy"}});
  TG_CHECK(x.shape() == dy.shape(), "{}: x {} and dy {} differ in shape", name, x.str(), dy.str());
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (dx.numel() > 0) backend_of(x).activation_backward(act, x.contiguous(), dy.contiguous(), dx);

  TensorList outputs{dx};
  tape().record(name, {x, dy}, outputs, [act, x, dy](const TensorList& g, const std::vector<bool>& needs) {
    const Tensor& gdx = g[0];
    Tensor gx, gdy;
    if (act == UnaryOp::relu) {
      if (needs[1]) gdy = relu_backward(x, gdx);
    } else {
      if (needs[0]) gx = mul(mul(gdx, dy), unary_op(UnaryOp::gelu_grad2, x));
      if (needs[1]) gdy = gelu_backward(x, gdx);
    }
    return TensorList{gx, gdy};
  });
  return outputs[0];
}

}  // namespace

Tensor bias_gelu(const Tensor& x, const Tensor& bias) {
  check_floating("bias_gelu", x, "x");
  check_floating("bias_gelu", bias, "bias");
  check_same("bias_gelu", {{&x, "x"}, {&bias, "bias"}});
  TG_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1),
           "bias_gelu: bias {} must be [C] for x {} of last dimension C", bias.str(), x.str());
  const std::int64_t c = bias.size(0);
  const std::int64_t rows = c > 0 ? x.numel() / c : 0;
  const Tensor xc = x.contiguous(), bc = bias.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() > 0) {
    backend_of(x).bias_gelu_forward(xc.as_strided({rows, c}, {c, 1}, xc.offset()), bc,
                                    y.as_strided({rows, c}, {c, 1}, 0));
  }
  TensorList outputs{y};
  tape().record("bias_gelu", {x, bias}, outputs,
                [x, bias, xc, bc, rows, c](const TensorList& g, const std::vector<bool>& needs) {
                  Tensor dpre;  // d/d(x + bias)
                  if (grad_mode_enabled()) {
                    dpre = gelu_backward(add(x, bias), g[0]);  // recorded: differentiable again
                  } else {
                    dpre = Tensor::empty(x.shape(), x.dtype(), x.device());
                    const Tensor dyc = g[0].contiguous();
                    if (dpre.numel() > 0) {
                      backend_of(x).bias_gelu_backward(xc.as_strided({rows, c}, {c, 1}, xc.offset()), bc,
                                                       dyc.as_strided({rows, c}, {c, 1}, dyc.offset()),
                                                       dpre.as_strided({rows, c}, {c, 1}, 0));
                    }
                  }
                  return TensorList{needs[0] ? dpre : Tensor(), needs[1] ? sum_to(dpre, bias.shape()) : Tensor()};
                });
  return outputs[0];
}

Tensor relu(const Tensor& x) { return unary_op(UnaryOp::relu, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::gelu, x); }
Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  return activation_backward(UnaryOp::relu, "relu_backward", x, dy);
}
Tensor gelu_backward(const Tensor& x, const Tensor& dy) {
  return activation_backward(UnaryOp::gelu, "gelu_backward", x, dy);
}

}  // namespace tg

// Activations. relu and gelu are unary ops (elementwise.cpp); their derivatives run as one fused
// kernel each (dy * act'(x)), exposed here as ops so that second-order derivatives pass through:
//   relu_backward(x, dy): linear in dy; zero derivative in x (almost everywhere).
//   gelu_backward(x, dy): linear in dy; d/dx = dy * gelu''(x).
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

Tensor relu(const Tensor& x) { return unary_op(UnaryOp::relu, x); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::gelu, x); }
Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  return activation_backward(UnaryOp::relu, "relu_backward", x, dy);
}
Tensor gelu_backward(const Tensor& x, const Tensor& dy) {
  return activation_backward(UnaryOp::gelu, "gelu_backward", x, dy);
}

}  // namespace tg

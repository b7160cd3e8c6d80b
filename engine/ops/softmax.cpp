// Softmax over the last dimension, and its fused backward as an op with its own (second-order) rule.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {
// [..., n] -> [rows, n] view of a contiguous tensor.
Tensor as_rows(const Tensor& x) {
  const std::int64_t n = x.size(-1);
  return x.as_strided({x.numel() / std::max<std::int64_t>(n, 1), n}, {n, 1}, x.offset());
}
}  // namespace

Tensor softmax(const Tensor& x) {
  check_floating("softmax", x, "x");
  TG_CHECK(x.dim() >= 1, "softmax: x {} has no last dimension", x.str());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() > 0) backend_of(x).softmax_forward(as_rows(x.contiguous()), as_rows(y));
  TensorList outputs{y};
  tape().record("softmax", {x}, outputs,
                [y](const TensorList& g, const std::vector<bool>&) { return TensorList{softmax_backward(y, g[0])}; });
  return outputs[0];
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  check_floating("softmax_backward", y, "y");
  check_floating("softmax_backward", dy, "dy");
  check_same("softmax_backward", {{&y, "y"}, {&dy, "dy"}});
  TG_CHECK(y.shape() == dy.shape() && y.dim() >= 1, "softmax_backward: y {} and dy {} differ in shape", y.str(),
           dy.str());
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  if (dx.numel() > 0) backend_of(y).softmax_backward(as_rows(y.contiguous()), as_rows(dy.contiguous()), as_rows(dx));
  TensorList outputs{dx};
  // dx = y * (dy - s), s = sum_j dy_j y_j. For a cotangent G of dx:
  //   d/d(dy) = softmax_backward(y, G)                    (linear in dy)
  //   d/dy    = G * (dy - s) - dy * sum_j(G_j y_j)
  tape().record("softmax_backward", {y, dy}, outputs, [y, dy](const TensorList& g, const std::vector<bool>& needs) {
    const Tensor& G = g[0];
    Tensor gy, gdy;
    if (needs[0]) {
      Tensor s = sum(mul(dy, y), -1, true);
      Tensor gys = sum(mul(G, y), -1, true);
      gy = sub(mul(G, sub(dy, s)), mul(dy, gys));
    }
    if (needs[1]) gdy = softmax_backward(y, G);
    return TensorList{gy, gdy};
  });
  return outputs[0];
}

}  // namespace tg

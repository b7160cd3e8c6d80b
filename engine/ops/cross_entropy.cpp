// Mean cross-entropy of logits against integer targets: one fused log-softmax + NLL + mean kernel forward,
// one fused kernel backward ((softmax - onehot) * dloss / N), and a second-order rule.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// dlogits = (softmax(logits) - onehot(targets)) * dloss / N. An op of its own so second order can pass.
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& dloss) {
  const double inv_n = 1.0 / static_cast<double>(logits.size(0));
  Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  if (dlogits.numel() > 0) {
    backend_of(logits).cross_entropy_backward(logits.contiguous(), targets.contiguous(), lse, dloss.contiguous(), inv_n,
                                              dlogits);
  }
  TensorList outputs{dlogits};
  // For a cotangent G of dlogits:
  //   d/dlogits = softmax_backward(p, G) * dloss / N    (the softmax Jacobian is symmetric)
  //   d/ddloss  = sum(G * (p - onehot)) / N             (dlogits is linear in dloss)
  tape().record("cross_entropy_backward", {logits, dloss}, outputs,
                [logits, targets, lse, dloss, inv_n](const TensorList& g, const std::vector<bool>& needs) {
                  const Tensor& G = g[0];
                  Tensor glogits, gdloss;
                  if (needs[0]) glogits = mul(softmax_backward(softmax(logits), G), scale(dloss, inv_n));
                  if (needs[1]) {
                    Tensor unit = Tensor::full({}, 1.0, dloss.dtype(), dloss.device());
                    gdloss = sum(mul(G, cross_entropy_backward(logits, targets, lse, unit)));
                  }
                  return TensorList{glogits, gdloss};
                });
  return outputs[0];
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_logits_and_targets("cross_entropy", logits, targets);

  const std::int64_t n = logits.size(0);
  Tensor losses = Tensor::empty({n}, logits.dtype(), logits.device());
  Tensor lse = Tensor::empty({n}, logits.dtype(), logits.device());
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  const Tensor lc = logits.contiguous(), tc = targets.contiguous();
  backend_of(logits).cross_entropy_forward(lc, tc, losses, lse, loss);  // the mean in the same kernel

  TensorList outputs{loss};
  tape().record("cross_entropy", {logits, targets}, outputs,
                [logits, targets, lse](const TensorList& g, const std::vector<bool>&) {
                  return TensorList{cross_entropy_backward(logits, targets, lse, g[0]), Tensor()};
                });
  return outputs[0];
}

}  // namespace tg

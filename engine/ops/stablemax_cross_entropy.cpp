// Mean StableMax cross-entropy of logits against integer targets: softmax's exp replaced by
// s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0). One fused kernel forward (per-row sums of s, losses and
// their mean), one fused kernel backward, which is an op itself whose rule, written in ops, is the
// second-order rule.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// logits, dlogits: [N, V]; targets, sums: [N] (sums: the forward's per-row sums of s); dloss: [].
// dlogits = (s'(x) / sums - onehot(targets) / (1 + |x|)) * dloss / N.
Tensor stablemax_cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& sums,
                                        const Tensor& dloss) {
  const double inv_n = 1.0 / static_cast<double>(logits.size(0));
  Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  backend_of(logits).stablemax_cross_entropy_backward(logits.contiguous(), targets.contiguous(), sums,
                                                      dloss.contiguous(), inv_n, dlogits);
  TensorList outputs{dlogits};
  // With u = log s(x) entrywise the loss is cross-entropy of u, so dlogits = dloss * h * (p - onehot) / N
  // with h = u' = s' / s = 1 / (1 + |x|) and p = softmax(u) = s / sum(s). For a cotangent G of dlogits:
  //   d/dlogits = dloss * (G * (h' / h) * B1 + h * softmax_backward(p, G * h) / N)
  //     B1 = this op at dloss = 1 (it holds the onehot term, so no onehot is built here);
  //     h' / h = -sgn(x) h, sgn = +1 for x >= 0 and -1 for x < 0 (s'' jumps at 0: the x >= 0 side counts)
  //   d/ddloss  = sum(G * B1)   (dlogits is linear in dloss)
  // p comes from the logits through ops, not from the saved sums, so this rule can be differentiated again.
  tape().record(
      "stablemax_cross_entropy_backward", {logits, dloss}, outputs,
      [logits, targets, sums, dloss, inv_n](const TensorList& g, const std::vector<bool>& needs) {
        const Tensor& G = g[0];
        const Tensor unit = Tensor::full({}, 1.0, dloss.dtype(), dloss.device());
        const Tensor b1 = stablemax_cross_entropy_backward(logits, targets, sums, unit);
        Tensor glogits, gdloss;
        if (needs[0]) {
          const Tensor h = div(unit, add_scalar(abs(logits), 1.0));                             // [N, V]
          const Tensor ones = Tensor::full(logits.shape(), 1.0, logits.dtype(), logits.device());
          const Tensor below = relu_backward(neg(logits), ones);                              // [x < 0]
          const Tensor dlog_h = mul(affine(below, 2.0, -1.0), h);                               // h' / h
          const Tensor s = div(add_scalar(relu(logits), 1.0), add_scalar(relu(neg(logits)), 1.0));
          const Tensor p = div(s, sum(s, -1, true));
          const Tensor curvature = add(mul(mul(G, dlog_h), b1), scale(mul(h, softmax_backward(p, mul(G, h))), inv_n));
          glogits = mul(curvature, dloss);
        }
        if (needs[1]) gdloss = sum(mul(G, b1));
        return TensorList{glogits, gdloss};
      });
  return outputs[0];
}

}  // namespace

Tensor stablemax_cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_logits_and_targets("stablemax_cross_entropy", logits, targets);

  const std::int64_t n = logits.size(0);
  Tensor losses = Tensor::empty({n}, logits.dtype(), logits.device());
  Tensor sums = Tensor::empty({n}, logits.dtype(), logits.device());
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  const Tensor lc = logits.contiguous(), tc = targets.contiguous();
  backend_of(logits).stablemax_cross_entropy_forward(lc, tc, losses, sums, loss);  // the mean in the same kernel

  TensorList outputs{loss};
  tape().record("stablemax_cross_entropy", {logits, targets}, outputs,
                [logits, targets, sums](const TensorList& g, const std::vector<bool>&) {
                  return TensorList{stablemax_cross_entropy_backward(logits, targets, sums, g[0]), Tensor()};
                });
  return outputs[0];
}

}  // namespace tg

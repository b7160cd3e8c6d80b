// Mean cross-entropy of logits against integer targets: one fused log-softmax + NLL + mean kernel forward,
// one fused kernel backward ((softmax - onehot) * dloss / N), and a second-order rule.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

void check_targets_in_range(const Tensor& targets, std::int64_t classes) {
  // Out-of-range targets would read outside the logits row: check on the host (the ids are small).
  const std::vector<std::int32_t> t = targets.to_vector<std::int32_t>();
  for (std::size_t i = 0; i < t.size(); ++i) {
    TG_CHECK(t[i] >= 0 && t[i] < classes, "cross_entropy: target {} at row {} is outside [0, {})", t[i], i, classes);
  }
}

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
  check_floating("cross_entropy", logits, "logits");
  check_ids("cross_entropy", targets, "targets");
  check_same("cross_entropy", {{&logits, "logits"}, {&targets, "targets"}});
  TG_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got {}", logits.str());
  TG_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
           "cross_entropy: targets {} do not match logits {} (need [N])", targets.str(), logits.str());
  TG_CHECK(logits.size(0) > 0 && logits.size(1) > 0, "cross_entropy: logits {} are empty", logits.str());
  if (!ids_checked_on_host()) check_targets_in_range(targets, logits.size(1));

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

// NeuralGrok's gradient amplifier as one fused op (docs/methods.md; the composite reference is
// Amplifier::apply_composite in optim/amplifier.cpp).
//
// Forward: one method-kernel call runs the per-entry MLP, the per-segment softmax statistics and the
// rescaling, saving only the scores [N] and per-segment (max, sum of exp, ||p g||) for the backward.
// Backward: one method-kernel call recomputes the MLP's hidden activations chunk by chunk and produces
// dg and the gradient of every weight. The backward is first order only: a second derivative through
// this op (a backward pass recorded with create_graph) fails loudly, naming the op; the composite
// path is differentiable to any order.
#include "optim/neural_amplify.h"

#include <cmath>

#include "engine/ops/op_checks.h"
#include "engine/tape.h"

namespace tg {

using namespace detail;

namespace {

constexpr const char* kOp = "neural_amplify";

// weights = [W0 [h1, 1], b0 [h1], W1 [h2, h1], b1 [h2], ..., Wk [1, hk], bk [1]], same dtype and device as g.
void check_weights(const Tensor& g, const TensorList& weights) {
  TG_CHECK(weights.size() >= 4 && weights.size() % 2 == 0,
           "{}: weights must be [W0, b0, W1, b1, ..., Wk, bk] with at least one hidden layer (an even number >= 4 "
           "of tensors), got {} tensors",
           kOp, weights.size());
  const std::size_t layers = weights.size() / 2;
  std::int64_t in = 1;
  for (std::size_t l = 0; l < layers; ++l) {
    const Tensor& w = weights[2 * l];
    const Tensor& b = weights[2 * l + 1];
    const std::string wname = fmt::format("W{} (weights[{}])", l, 2 * l);
    const std::string bname = fmt::format("b{} (weights[{}])", l, 2 * l + 1);
    check_floating(kOp, w, wname.c_str());
    check_floating(kOp, b, bname.c_str());
    check_same(kOp, {{&g, "g"}, {&w, wname.c_str()}, {&b, bname.c_str()}});
    const bool last = l + 1 == layers;
    TG_CHECK(w.dim() == 2 && w.size(1) == in && w.size(0) > 0 && (!last || w.size(0) == 1),
             "{}: {} must be [{}, {}]{}, got {}", kOp, wname, last ? "1" : "out", in,
             l == 0 ? " (the amplifier reads one scalar per entry)"
                    : last ? " (the last layer has one output)" : " (its input is the previous layer's output)",
             w.str());
    TG_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "{}: {} must be [{}] to match {} {}, got {}", kOp, bname,
             w.size(0), wname, w.str(), b.str());
    in = w.size(0);
  }
}

// Sorted, disjoint, non-empty and inside [0, n).
void check_segments(const Tensor& g, const std::vector<Segment>& segments) {
  const std::int64_t n = g.numel();
  std::int64_t end = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const Segment& s = segments[k];
    TG_CHECK(s.size > 0, "{}: segment {} [{}, {}) is empty (every segment needs at least one entry)", kOp, k, s.begin,
             s.begin + s.size);
    TG_CHECK(s.begin >= end, "{}: segment {} [{}, {}) starts before {} (segments must be sorted, disjoint and start at "
             ">= 0; the previous one ends at {})",
             kOp, k, s.begin, s.begin + s.size, end, end);
    TG_CHECK(s.begin < n && s.size <= n - s.begin, "{}: segment {} [{}, {}) lies outside g {}", kOp, k, s.begin,
             s.begin + s.size, g.str());
    end = s.begin + s.size;
  }
}

}  // namespace

Tensor neural_amplify(const Tensor& g, const TensorList& weights, const std::vector<Segment>& segments, double c,
                      MlpPath path) {
  check_floating(kOp, g, "g");
  TG_CHECK(g.dim() == 1, "{}: g must be a flat buffer [N], got {}", kOp, g.str());
  TG_CHECK(std::isfinite(c), "{}: c must be finite, got {}", kOp, c);
  check_weights(g, weights);
  check_segments(g, segments);

  const Tensor gc = g.contiguous();
  TensorList wc;
  for (const Tensor& w : weights) wc.push_back(w.contiguous());
  const std::int64_t n = g.numel();
  const auto count = static_cast<std::int64_t>(segments.size());
  Tensor out = Tensor::empty({n}, g.dtype(), g.device());
  Tensor scores = Tensor::empty({n}, g.dtype(), g.device());
  Tensor stats = Tensor::empty({count, 3}, g.dtype(), g.device());
  method_kernels_for(g.device()).neural_amplify_forward(gc, wc, segments, c, path, out, scores, stats);

  TensorList inputs{g};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  TensorList outputs{out};
  tape().record(kOp, inputs, outputs,
                [gc, wc, segments, c, path, scores, stats](const TensorList& grads,
                                                           const std::vector<bool>&) -> TensorList {
                  if (grad_mode_enabled()) {
                    throw Error(fmt::format(
                        "op '{}' has no backward rule: tapegrok cannot differentiate through it (this is a "
                        "derivative order the engine does not provide): the fused amplifier's backward is first "
                        "order only; use Amplifier::apply_composite where a second derivative through the "
                        "amplifier is needed",
                        kOp));
                  }
                  const Tensor dout = grads[0].contiguous();
                  Tensor dg = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
                  TensorList dweights;
                  for (const Tensor& w : wc) dweights.push_back(Tensor::empty(w.shape(), w.dtype(), w.device()));
                  method_kernels_for(gc.device())
                      .neural_amplify_backward(dout, gc, wc, segments, c, path, scores, stats, dg, dweights);
                  TensorList result{dg};
                  result.insert(result.end(), dweights.begin(), dweights.end());
                  return result;
                });
  return outputs[0];
}

}  // namespace tg

// NeuralGrok's gradient amplifier G_phi (papers.md, section 1).
//
// Each parameter tensor's gradient g (N entries) is rewritten on its own:
//   s_i = MLP(g_i)                       one small MLP applied to every scalar: Linear(1, h1), ReLU, ...,
//                                        Linear(hk, 1)
//   p   = softmax(s) over the N entries
//   g'  = c * (p * g) / ||p * g||_2
// The amplifier's parameters are named as a PyTorch nn.Sequential of Linear/ReLU layers:
// amp.mlp.0.weight [h1, 1], amp.mlp.0.bias [h1], amp.mlp.2.weight [h2, h1], ..., amp.mlp.{2k}.weight [1, hk].
#pragma once

#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/parameters.h"
#include "engine/random.h"
#include "optim/neural_amplify.h"

namespace tg {

struct AmplifierConfig {
  std::vector<std::int64_t> hidden{128, 128};  // the official code's sizes; the paper uses (32, 32, ...)
  double c = 1.0;
  // How the fused op's kernels evaluate the MLP (optim/method_kernels.h); tests and benchmarks compare
  // the paths, training leaves it automatic.
  MlpPath mlp_path = MlpPath::automatic;
};

// "128,128" -> {128, 128}; throws naming the text when a size is not a positive integer.
std::vector<std::int64_t> parse_hidden_sizes(const std::string& text);

class Amplifier {
 public:
  explicit Amplifier(AmplifierConfig config);

  const AmplifierConfig& config() const { return config_; }
  std::vector<ParameterSpec> parameter_specs() const;
  void initialize(const ParameterTable& params, Rng& rng) const;  // nn.Linear's defaults

  // The transformed gradient of every segment of a flat gradient buffer; entries outside every
  // segment (the flat buffer's padding) are 0. Recorded on the tape: differentiable in `amp_params`
  // and in `flat_grad`. Runs the fused op (optim/neural_amplify.h) on config().mlp_path.
  Tensor apply(const TensorList& amp_params, const Tensor& flat_grad, const std::vector<Segment>& segments) const;

  // The same function composed from primitive ops, one segment at a time: the reference the fused op
  // is tested against, and differentiable to any order.
  Tensor apply_composite(const TensorList& amp_params, const Tensor& flat_grad,
                         const std::vector<Segment>& segments) const;

 private:
  AmplifierConfig config_;
};

// The segments of a parameter table's flat buffers: each parameter's entries, without the padding.
std::vector<Segment> parameter_segments(const ParameterTable& params);

}  // namespace tg

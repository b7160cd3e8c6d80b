#include "optim/amplifier.h"

#include <fmt/format.h>

#include <cmath>
#include <sstream>

#include "engine/error.h"

namespace tg {

std::vector<std::int64_t> parse_hidden_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    TG_CHECK(used == item.size() && v > 0 && v <= 65536, "amplifier hidden sizes '{}': '{}' is not a positive size",
             text, item);
    sizes.push_back(v);
  }
  TG_CHECK(!sizes.empty(), "amplifier hidden sizes '{}': need at least one hidden layer", text);
  return sizes;
}

Amplifier::Amplifier(AmplifierConfig config) : config_(std::move(config)) {
  TG_CHECK(!config_.hidden.empty(), "amplifier: need at least one hidden layer");
  TG_CHECK(config_.c > 0, "amplifier: c must be positive, got {}", config_.c);
}

std::vector<ParameterSpec> Amplifier::parameter_specs() const {
  std::vector<ParameterSpec> specs;
  std::int64_t in = 1;
  std::size_t index = 0;
  for (std::size_t layer = 0; layer <= config_.hidden.size(); ++layer, index += 2) {
    const std::int64_t out = layer < config_.hidden.size() ? config_.hidden[layer] : 1;
    specs.push_back({fmt::format("amp.mlp.{}.weight", index), {out, in}});
    specs.push_back({fmt::format("amp.mlp.{}.bias", index), {out}});
    in = out;
  }
  return specs;
}

void Amplifier::initialize(const ParameterTable& params, Rng& rng) const {
  NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); i += 2) {
    // nn.Linear: weight and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    const double bound = 1.0 / std::sqrt(static_cast<double>(params[i].shape()[1]));
    for (std::size_t k : {i, i + 1}) {
      Tensor p = params[k];
      p.copy_from_(uniform_tensor(rng, p.shape(), -bound, bound, p.dtype()));
    }
  }
}

Tensor Amplifier::apply(const TensorList& amp_params, const Tensor& flat_grad,
                        const std::vector<Segment>& segments) const {
  return neural_amplify(flat_grad, amp_params, segments, config_.c, config_.mlp_path);
}

Tensor Amplifier::apply_composite(const TensorList& amp_params, const Tensor& flat_grad,
                                  const std::vector<Segment>& segments) const {
  TG_CHECK(amp_params.size() == 2 * (config_.hidden.size() + 1), "amplifier: {} parameter tensors, expected {}",
           amp_params.size(), 2 * (config_.hidden.size() + 1));
  TG_CHECK(flat_grad.dim() == 1, "amplifier: the gradient must be a flat buffer, got {}", flat_grad.str());
  TensorList pieces;
  std::int64_t at = 0;
  auto zeros = [&](std::int64_t n) { return Tensor::zeros({n}, flat_grad.dtype(), flat_grad.device()); };
  for (const Segment& s : segments) {
    TG_CHECK(s.begin >= at && s.size > 0 && s.begin + s.size <= flat_grad.numel(),
             "amplifier: segment [{}, {}) is out of order or outside the buffer of {}", s.begin, s.begin + s.size,
             flat_grad.numel());
    if (s.begin > at) pieces.push_back(zeros(s.begin - at));
    const Tensor g = slice(flat_grad, 0, s.begin, s.size);  // [N]
    Tensor h = reshape(g, {s.size, 1});
    for (std::size_t layer = 0; layer + 1 < amp_params.size(); layer += 2) {
      h = linear(h, amp_params[layer], amp_params[layer + 1]);
      if (layer + 2 < amp_params.size()) h = relu(h);
    }
    const Tensor p = softmax(reshape(h, {s.size}));
    const Tensor q = mul(p, g);
    const Tensor norm = l2_norm(q);
    // An all-zero gradient (a frozen tensor) stays zero rather than 0 / 0; a NaN norm stays NaN.
    pieces.push_back(norm.item() != 0.0 ? div(scale(q, config_.c), norm) : zeros(s.size));
    at = s.begin + s.size;
  }
  if (at < flat_grad.numel()) pieces.push_back(zeros(flat_grad.numel() - at));
  return concat(pieces, 0);
}

std::vector<Segment> parameter_segments(const ParameterTable& params) {
  std::vector<Segment> segments;
  for (std::size_t i = 0; i < params.size(); ++i) segments.push_back({params.offset(i), params[i].numel()});
  return segments;
}

}  // namespace tg

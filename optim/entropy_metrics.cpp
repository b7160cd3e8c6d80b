#include "optim/entropy_metrics.h"

#include <fmt/format.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "optim/amplifier.h"  // parameter_segments

namespace tg {

namespace {

// The segmented reduction on the device: [2 * segments - 1] values, segment k's at 2k (the odd
// entries are the gaps between segments). Reads nothing on the host.
Tensor abs_entropy_pieces(const Tensor& flat, const std::vector<Segment>& segments) {
  TG_CHECK(flat.defined() && is_floating(flat.dtype()) && flat.dim() == 1,
           "abs_entropy: expected a flat floating buffer [N], got {}", flat.defined() ? flat.str() : "undefined");
  TG_CHECK(!segments.empty(), "abs_entropy: no segments");
  // Offsets [b0, e0, b1, e1, ...]: the reduction's even segments are ours, the odd ones the gaps between.
  std::vector<std::int64_t> offsets;
  std::int64_t end = 0;
  for (std::size_t k = 0; k < segments.size(); ++k) {
    const Segment& s = segments[k];
    TG_CHECK(s.size >= 0 && s.begin >= end && s.begin <= flat.numel() && s.size <= flat.numel() - s.begin,
             "abs_entropy: segment {} [{}, {}) is out of order or outside the buffer {}", k, s.begin, s.begin + s.size,
             flat.str());
    offsets.push_back(s.begin);
    offsets.push_back(s.begin + s.size);
    end = s.begin + s.size;
  }
  NoGradGuard no_grad;
  const Tensor x = flat.contiguous();
  const auto pieces = static_cast<std::int64_t>(offsets.size()) - 1;
  Tensor out = Tensor::empty({pieces}, x.dtype(), x.device());
  backend_for(x.device()).segmented_reduce(ReduceOp::abs_entropy, x, offsets, out);
  return out;
}

// The host half: per-segment values and their sum from abs_entropy_pieces' result.
EntropyStats read_pieces(const Tensor& pieces, std::size_t segments) {
  TG_CHECK(pieces.defined() && pieces.dim() == 1 && pieces.numel() == 2 * static_cast<std::int64_t>(segments) - 1,
           "abs_entropy: expected {} values for {} segments, got {}", 2 * segments - 1, segments,
           pieces.defined() ? pieces.str() : "undefined");
  EntropyStats stats;
  std::vector<double> host;
  const Tensor h = pieces.to(Device::cpu());
  if (h.dtype() == DType::f64) {
    host = h.to_vector<double>();
  } else {
    const std::vector<float> f = h.to_vector<float>();
    host.assign(f.begin(), f.end());
  }
  for (std::size_t k = 0; k < segments; ++k) {
    stats.per_tensor.push_back(host[2 * k]);
    stats.total += host[2 * k];
  }
  return stats;
}

void add_names(const ParameterTable& params, EntropyStats& stats) {
  for (std::size_t i = 0; i < params.size(); ++i) stats.names.push_back(params.name(i));
}

}  // namespace

EntropyStats abs_entropy(const Tensor& flat, const std::vector<Segment>& segments) {
  if (segments.empty()) return {};
  return read_pieces(abs_entropy_pieces(flat, segments), segments.size());
}

EntropyStats gradient_entropy(const ParameterTable& params, const Tensor& flat, const std::vector<Segment>& segments) {
  TG_CHECK(segments.size() == params.size(), "gradient_entropy: {} segments for a table of {} parameters",
           segments.size(), params.size());
  EntropyStats stats = abs_entropy(flat, segments);
  add_names(params, stats);
  return stats;
}

Tensor gradient_entropy_on_device(const ParameterTable& params) {
  return abs_entropy_pieces(params.flat_grads(), parameter_segments(params));
}

EntropyStats read_gradient_entropy(const ParameterTable& params, const Tensor& on_device) {
  EntropyStats stats = read_pieces(on_device, params.size());
  add_names(params, stats);
  return stats;
}

EntropyStats gradient_entropy(const ParameterTable& params) {
  return gradient_entropy(params, params.flat_grads(), parameter_segments(params));
}

EntropyStats weight_entropy(const ParameterTable& params) {
  return gradient_entropy(params, params.flat_values(), parameter_segments(params));
}

}  // namespace tg

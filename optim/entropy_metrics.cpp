#include "optim/entropy_metrics.h"

#include <fmt/format.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "optim/amplifier.h"  // parameter_segments

namespace tg {

EntropyStats abs_entropy(const Tensor& flat, const std::vector<Segment>& segments) {
  TG_CHECK(flat.defined() && is_floating(flat.dtype()) && flat.dim() == 1,
           "abs_entropy: expected a flat floating buffer [N], got {}", flat.defined() ? flat.str() : "undefined");
  EntropyStats stats;
  if (segments.empty()) return stats;
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
  std::vector<double> host;
  const Tensor h = out.to(Device::cpu());
  if (h.dtype() == DType::f64) {
    host = h.to_vector<double>();
  } else {
    const std::vector<float> f = h.to_vector<float>();
    host.assign(f.begin(), f.end());
  }
  for (std::size_t k = 0; k < segments.size(); ++k) {
    stats.per_tensor.push_back(host[2 * k]);
    stats.total += host[2 * k];
  }
  return stats;
}

EntropyStats gradient_entropy(const ParameterTable& params, const Tensor& flat, const std::vector<Segment>& segments) {
  TG_CHECK(segments.size() == params.size(), "gradient_entropy: {} segments for a table of {} parameters",
           segments.size(), params.size());
  EntropyStats stats = abs_entropy(flat, segments);
  for (std::size_t i = 0; i < params.size(); ++i) stats.names.push_back(params.name(i));
  return stats;
}

EntropyStats gradient_entropy(const ParameterTable& params) {
  return gradient_entropy(params, params.flat_grads(), parameter_segments(params));
}

EntropyStats weight_entropy(const ParameterTable& params) {
  return gradient_entropy(params, params.flat_values(), parameter_segments(params));
}

}  // namespace tg

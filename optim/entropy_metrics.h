// NeuralGrok's complexity metrics (docs/methods.md): Absolute Gradient Entropy
//   AGE(g) = -sum_i |g_i| ln |g_i|     (natural log, no normalisation, 0 ln 0 = 0)
// and Absolute Weight Entropy AWE(w), the same sum over the parameter values. Reported per parameter
// tensor and for the whole model (the sum of the per-tensor values: the reference computes AGE over
// all parameters' gradients concatenated).
//
// One segmented reduction (Backend::segmented_reduce with ReduceOp::abs_entropy, double accumulators)
// over a flat buffer, then one copy of the per-tensor values to the host.
#pragma once

#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/parameters.h"

namespace tg {

struct EntropyStats {
  std::vector<std::string> names;  // parameter names, when computed over a ParameterTable's layout
  std::vector<double> per_tensor;  // one value per segment
  double total = 0.0;              // sum of per_tensor
};

// -sum |x| ln |x| over each segment of the flat buffer `flat` (segments sorted, disjoint, inside).
EntropyStats abs_entropy(const Tensor& flat, const std::vector<Segment>& segments);

// AGE of a flat gradient buffer laid out like `params` (e.g. the amplifier's transformed gradients),
// over `segments` (one per parameter, e.g. parameter_segments(params)); names from the table.
EntropyStats gradient_entropy(const ParameterTable& params, const Tensor& flat, const std::vector<Segment>& segments);
// AGE of the table's own gradient buffer.
EntropyStats gradient_entropy(const ParameterTable& params);
// AWE of the table's parameter values.
EntropyStats weight_entropy(const ParameterTable& params);

// gradient_entropy(params) in two halves, for a step that must not wait for the device: the
// reduction into a device tensor (one value per parameter tensor and per gap between them, so a
// fixed shape for a given table) ...
Tensor gradient_entropy_on_device(const ParameterTable& params);
// ... and, where a wait is allowed, the read of such a tensor into per-tensor values and their sum.
EntropyStats read_gradient_entropy(const ParameterTable& params, const Tensor& on_device);

}  // namespace tg

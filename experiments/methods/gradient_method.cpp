#include "experiments/methods/gradient_method.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

Tensor GradientMethod::transform_recorded(const Tensor&, const std::vector<Segment>&) {
  throw Error(fmt::format("gradient method '{}' has no recorded form, so it cannot run inside a recorded step "
                          "(--meta-grad unrolled)",
                          name()));
}

bool GradientMethod::end_recorded_step(const Model&, const TensorList&, std::int64_t) { return false; }

}  // namespace tg

// One table of op invocations shared by the float64 gradient checks (CPU) and the GPU-vs-CPU
// comparisons: every op of engine/ops.h appears here at least once, on odd shapes.
#pragma once

#include <string>
#include <vector>

#include "support.h"

namespace tgtest {

struct OpCase {
  std::string name;
  std::function<TensorList(tg::Rng&)> inputs;  // f64 CPU tensors (i32 for ids/targets)
  Function fn;
};

const std::vector<OpCase>& op_cases();

}  // namespace tgtest

// One table of op invocations shared by the float64 gradient checks (CPU) and the GPU-vs-CPU
// comparisons, on odd shapes, and a second one for the ops gradients say nothing about, checked
// forward against plain loops. Between them every op of engine/ops.h appears at least once:
// test_op_coverage.cpp reads engine/ops.h and fails for any op that has no case.
#pragma once

#include <string>
#include <vector>

#include "support.h"

namespace tgtest {

struct OpCase {
  std::string name;
  std::function<TensorList(tg::Rng&)> inputs;  // f64 CPU tensors (i32 for ids/targets)
  Function fn;
  std::vector<std::string> ops = {};           // the engine/ops.h functions it checks (op_cases(): at least
                                               // the name's first word)
  std::string no_second_order = {};            // not empty: second order must fail, naming this op
};

const std::vector<OpCase>& op_cases();

// Ops whose gradient is zero or undefined (sign, argmax, count_equal, the in-place add_): each output
// against `reference`, plain loops over the inputs' values, exactly (the outputs are exact or one
// correctly rounded operation).
struct ForwardCase {
  std::string name;
  std::vector<std::string> ops;                 // the engine/ops.h functions it checks
  std::function<TensorList(tg::Rng&)> inputs;  // f64 CPU tensors (i32 for ids)
  Function fn;
  std::function<std::vector<double>(const std::vector<std::vector<double>>&)> reference;  // input values -> output
};

const std::vector<ForwardCase>& forward_cases();

}  // namespace tgtest

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

// The default Transformer's shapes (batch 512, sequence 5, width 128, 4 heads, vocabulary 99), and
// attention at the longest sequence the fused short-sequence kernel serves and beyond it: float32
// kernels of a device against the CPU in float64 at the sizes that train.
const std::vector<OpCase>& model_size_cases();

// One case on `device` in `dtype` (its float64 inputs converted): the output, and the gradients of
// sum(output * w), w random (seed 99), with respect to every floating input.
struct CaseRun {
  tg::Tensor output;
  TensorList grads;
};
CaseRun run_case(const OpCase& op, const TensorList& inputs_f64, tg::Device device, tg::DType dtype);

// Catch checks that `op` in float32 on `device` matches the CPU in float64 from the same inputs
// (op.inputs with `seed`): the output (on `device`) and every gradient within `tolerance` relative error.
void check_float32_against_float64(const OpCase& op, std::uint64_t seed, tg::Device device, double tolerance = 1e-5);

}  // namespace tgtest

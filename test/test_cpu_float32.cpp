// The CPU kernels in float32 against the CPU in float64: every op case and the model-size cases,
// forward outputs and the gradients of a random projection, by relative error. The gradient checks
// run in float64 only, so without this the float32 instantiations (the ones training uses, with
// their own vectorised loops and fast exp / normal CDF) would be checked only through whole runs.
// New tensors are poisoned with NaN so that unwritten outputs fail.
#include <catch2/catch_test_macros.hpp>

#include "op_cases.h"

using namespace tgtest;
using namespace tg;

TEST_CASE("every op in float32 on the CPU matches its float64 result", "[ops][float32]") {
  PoisonGuard poison;
  for (const OpCase& op : op_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 2024, Device::cpu()); }
  }
}

TEST_CASE("float32 CPU kernels at model sizes match float64", "[ops][float32]") {
  PoisonGuard poison;
  for (const OpCase& op : model_size_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 31, Device::cpu()); }
  }
}

// The CPU kernels in float32 against the CPU in float64: every op case and the model-size cases,
// forward outputs and the gradients of a random projection, by relative error. The gradient checks
// run in float64 only, so without this the float32 instantiations (the ones training uses, with
// their own vectorised loops and fast exp / normal CDF) would be checked only through whole runs.
// New tensors are poisoned with NaN so that unwritten outputs fail.
#include <catch2/catch_test_macros.hpp>

#include "op_cases.h"

using namespace tgtest;
using namespace tg;

namespace {

struct PoisonGuard {
  PoisonGuard() { set_poison_new_tensors(true); }
  ~PoisonGuard() { set_poison_new_tensors(false); }
};

void check_float32_against_float64(const OpCase& op, std::uint64_t seed) {
  Rng rng(seed);
  const TensorList inputs = op.inputs(rng);
  const CaseRun ref = run_case(op, inputs, Device::cpu(), DType::f64);
  const CaseRun f32 = run_case(op, inputs, Device::cpu(), DType::f32);
  CHECK(f32.output.dtype() == DType::f32);
  const double out_err = rel_error(f32.output, ref.output);
  INFO(op.name << ": forward relative error " << out_err);
  CHECK(out_err < 1e-5);
  REQUIRE(f32.grads.size() == ref.grads.size());
  for (std::size_t k = 0; k < ref.grads.size(); ++k) {
    const double err = rel_error(f32.grads[k], ref.grads[k]);
    INFO(op.name << ": gradient " << k << " relative error " << err);
    CHECK(err < 1e-5);
  }
}

}  // namespace

TEST_CASE("every op in float32 on the CPU matches its float64 result", "[ops][float32]") {
  PoisonGuard poison;
  for (const OpCase& op : op_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 2024); }
  }
}

TEST_CASE("float32 CPU kernels at model sizes match float64", "[ops][float32]") {
  PoisonGuard poison;
  for (const OpCase& op : model_size_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 31); }
  }
}

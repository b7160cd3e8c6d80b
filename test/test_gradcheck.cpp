// Every op's backward (and, where provided, its second-order rule) against central finite
// differences in float64.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "op_cases.h"

using namespace tgtest;

TEST_CASE("first-order gradients match float64 finite differences", "[autograd][gradcheck]") {
  for (const OpCase& op : op_cases()) {
    DYNAMIC_SECTION(op.name) {
      tg::Rng rng(123);
      const TensorList inputs = op.inputs(rng);
      const GradCheckResult r = gradcheck(op.fn, inputs);
      INFO(op.name << ": worst " << r.worst << ", relative error " << r.max_rel_error);
      CHECK(r.max_rel_error < 1e-6);
    }
  }
}

TEST_CASE("second-order gradients (Hessian-vector products) match finite differences of gradients",
          "[autograd][gradcheck][second-order]") {
  for (const OpCase& op : op_cases()) {
    if (!op.second_order) continue;
    DYNAMIC_SECTION(op.name) {
      tg::Rng rng(321);
      const TensorList inputs = op.inputs(rng);
      const GradCheckResult r = gradgradcheck(op.fn, inputs);
      INFO(op.name << ": worst " << r.worst << ", relative error " << r.max_rel_error);
      CHECK(r.max_rel_error < 1e-5);
    }
  }
}

TEST_CASE("ops without a second-order rule fail loudly, naming the op", "[autograd][second-order]") {
  for (const OpCase& op : op_cases()) {
    if (op.second_order) continue;
    DYNAMIC_SECTION(op.name) {
      tg::Rng rng(5);
      const TensorList inputs = op.inputs(rng);
      auto attempt = [&] { return gradgradcheck(op.fn, inputs); };
      CHECK_THROWS_WITH(attempt(), Catch::Matchers::ContainsSubstring("has no backward rule"));
    }
  }
}

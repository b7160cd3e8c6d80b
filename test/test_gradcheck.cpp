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
    DYNAMIC_SECTION(op.name) {
      tg::Rng rng(321);
      const TensorList inputs = op.inputs(rng);
      if (!op.no_second_order.empty()) {
        // Second order is not provided here: it must fail, naming the op, never give a wrong number.
        CHECK_THROWS_WITH(gradgradcheck(op.fn, inputs),
                          Catch::Matchers::ContainsSubstring("'" + op.no_second_order + "' has no backward rule"));
        tg::tape().clear();
      } else {
        const GradCheckResult r = gradgradcheck(op.fn, inputs);
        INFO(op.name << ": worst " << r.worst << ", relative error " << r.max_rel_error);
        CHECK(r.max_rel_error < 1e-5);
      }
    }
  }
}

TEST_CASE("a derivative order tapegrok does not provide fails loudly, naming the op", "[autograd][second-order]") {
  // GELU is differentiable twice (gelu_backward's rule uses gelu''); a third derivative is not provided.
  tg::tape().clear();
  tg::Tensor x = tg::Tensor::from_vector<double>({0.3, -1.2}, {2}).set_requires_grad(true);
  tg::TensorList g1 = tg::grad({tg::sum(tg::gelu(x))}, {x}, {}, {.create_graph = true});
  tg::TensorList g2 = tg::grad({tg::sum(g1[0])}, {x}, {}, {.create_graph = true});
  CHECK_THROWS_WITH(tg::grad({tg::sum(g2[0])}, {x}), Catch::Matchers::ContainsSubstring("'gelu_grad2' has no backward rule"));
  tg::tape().clear();
}

#include <catch2/catch_test_macros.hpp>

#include "engine/ops.h"

TEST_CASE("smoke") {
  tg::Tensor a = tg::Tensor::full({2, 3}, 2.0, tg::DType::f32);
  a.set_requires_grad(true);
  tg::Tensor y = tg::sum(tg::mul(a, a));
  REQUIRE(y.item() == 24.0);
  tg::backward(y);
  auto g = a.grad().to_vector<float>();
  REQUIRE(g[0] == 4.0f);
}

// The tape's semantics: what gets recorded, how gradients accumulate, and how misuse is reported.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>

#include "support.h"

using namespace tgtest;
using namespace tg;
using Catch::Matchers::ContainsSubstring;

namespace {
Tensor leaf(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s).set_requires_grad(true); }
}  // namespace

TEST_CASE("ops record only when an input requires grad and grad mode is on", "[tape]") {
  tape().clear();
  Tensor a = leaf({1, 2, 3}, {3});
  Tensor c = Tensor::from_vector<double>({4, 5, 6}, {3});
  (void)mul(c, c);
  CHECK(tape().num_nodes() == 0);
  Tensor y = mul(a, c);
  CHECK(tape().num_nodes() == 1);
  CHECK(y.requires_grad());
  {
    NoGradGuard no_grad;
    Tensor z = mul(a, c);
    CHECK(!z.requires_grad());
  }
  CHECK(tape().num_nodes() == 1);
  tape().clear();
  CHECK(!y.requires_grad());  // a recorded output becomes a constant after clear()
  CHECK(a.requires_grad());   // a leaf stays a leaf
}

TEST_CASE("backward accumulates into .grad of leaves; grad() returns without accumulating", "[tape]") {
  tape().clear();
  Tensor a = leaf({1, 2, 3}, {3});
  Tensor b = leaf({-1, 0.5, 2}, {3});
  // y = sum(a * b + a): dy/da = b + 1, dy/db = a
  backward(sum(add(mul(a, b), a)));
  CHECK(values(a.grad()) == std::vector<double>{0, 1.5, 3});
  CHECK(values(b.grad()) == std::vector<double>{1, 2, 3});
  tape().clear();
  backward(sum(mul(a, b)));  // accumulates: + b
  CHECK(values(a.grad()) == std::vector<double>{-1, 2, 5});
  tape().clear();
  TensorList g = grad({sum(mul(a, a))}, {a, b});
  CHECK(values(g[0]) == std::vector<double>{2, 4, 6});
  CHECK(values(g[1]) == std::vector<double>{0, 0, 0});  // b does not influence the root
  CHECK(values(a.grad()) == std::vector<double>{-1, 2, 5});  // untouched by grad()
}

TEST_CASE("a leaf used twice gets the sum of both paths, and a shared gradient is not aliased", "[tape]") {
  tape().clear();
  Tensor a = leaf({2}, {1});
  Tensor b = leaf({3}, {1});
  backward(sum(add(a, b)));  // both leaves receive the same incoming gradient tensor
  add_(a.grad(), Tensor::from_vector<double>({10}, {1}));
  CHECK(values(b.grad()) == std::vector<double>{1});  // b's .grad is its own copy
  tape().clear();
  Tensor x = leaf({3}, {1});
  TensorList g = grad({sum(mul(x, mul(x, x)))}, {x});  // d x^3 = 3 x^2
  CHECK(values(g[0])[0] == 27.0);
}

TEST_CASE("second derivatives by differentiating a recorded backward", "[tape][second-order]") {
  tape().clear();
  Tensor x = leaf({0.5, -1.0, 2.0}, {3});
  // f = sum(x^3 + exp(x)); f' = 3x^2 + e^x; f'' = 6x + e^x
  Tensor f = sum(add(mul(x, square(x)), exp(x)));
  TensorList g = grad({f}, {x}, {}, {.create_graph = true});
  CHECK(g[0].requires_grad());
  TensorList h = grad({sum(g[0])}, {x});
  const auto H = values(h[0]);
  const std::vector<double> X = {0.5, -1.0, 2.0};
  for (int i = 0; i < 3; ++i) CHECK(std::fabs(H[i] - (6 * X[i] + std::exp(X[i]))) < 1e-12);
}

TEST_CASE("misuse of the tape is reported, naming the op", "[tape][errors]") {
  tape().clear();
  Tensor a = leaf({1, 2}, {2});
  SECTION("backward twice without retain_graph") {
    Tensor y = sum(exp(a));
    backward(y);
    CHECK_THROWS_WITH(backward(y), ContainsSubstring("'sum'") && ContainsSubstring("second time"));
  }
  SECTION("retain_graph allows a second pass") {
    Tensor y = sum(exp(a));
    backward(y, Tensor(), {.retain_graph = true});
    CHECK_NOTHROW(backward(y));
  }
  SECTION("an input modified in place after recording") {
    Tensor c = Tensor::from_vector<double>({3, 4}, {2});
    Tensor y = sum(mul(a, c));
    c.fill_(0.0);
    CHECK_THROWS_WITH(backward(y), ContainsSubstring("'mul'") && ContainsSubstring("modified in place"));
  }
  SECTION("a non-scalar root without a gradient") {
    Tensor y = exp(a);
    CHECK_THROWS_WITH(backward(y), ContainsSubstring("not a single value"));
  }
  SECTION("a root that does not depend on anything recorded") {
    Tensor c = Tensor::from_vector<double>({3, 4}, {2});
    CHECK_THROWS_WITH(backward(sum(c)), ContainsSubstring("not produced by an op recorded"));
  }
  SECTION("an integer tensor cannot require grad") {
    Tensor ids = Tensor::from_vector<std::int32_t>({1}, {1});
    CHECK_THROWS_WITH(ids.set_requires_grad(true), ContainsSubstring("i32"));
  }
}

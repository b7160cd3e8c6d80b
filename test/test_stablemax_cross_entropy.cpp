// stablemax_cross_entropy against its definition written out in plain double loops: the loss, its
// gradient and Hessian-vector products (s'' jumps at 0, where the x >= 0 side counts), on odd shapes,
// in float32 and float64; third derivatives against finite differences; its input checks; and the
// host copy of the targets that an IdsCheckedGuard spares.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>
#include <limits>

#include "engine/second_order.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;

namespace {

// s(x) and its first two derivatives, and d^2/dx^2 log s(x), each from its definition by cases.
double s_ref(double x) { return x >= 0 ? x + 1 : 1 / (1 - x); }
double ds_ref(double x) { return x >= 0 ? 1 : 1 / ((1 - x) * (1 - x)); }
double d2s_ref(double x) { return x >= 0 ? 0 : 2 / ((1 - x) * (1 - x) * (1 - x)); }
double d2log_s_ref(double x) { return d2s_ref(x) / s_ref(x) - ds_ref(x) * ds_ref(x) / (s_ref(x) * s_ref(x)); }

struct Reference {
  double loss = 0;
  std::vector<double> grad;  // d loss / d logits, [N, V]
  std::vector<double> hv;    // (d^2 loss / d logits^2) v, [N, V]
};

// The mean over rows of log S - log s(x_t), S = sum_j s(x_j), its gradient, and H v for a direction v.
Reference reference(const std::vector<double>& x, const std::vector<double>& t, std::int64_t n, std::int64_t v,
                    const std::vector<double>& dir) {
  Reference r;
  r.grad.assign(x.size(), 0.0);
  r.hv.assign(x.size(), 0.0);
  for (std::int64_t i = 0; i < n; ++i) {
    const double* row = &x[static_cast<std::size_t>(i * v)];
    const double* d = dir.empty() ? nullptr : &dir[static_cast<std::size_t>(i * v)];
    const auto target = static_cast<std::int64_t>(t[static_cast<std::size_t>(i)]);
    double total = 0, ds_dot_d = 0;
    for (std::int64_t j = 0; j < v; ++j) total += s_ref(row[j]);
    for (std::int64_t j = 0; j < v && d; ++j) ds_dot_d += ds_ref(row[j]) * d[j];
    r.loss += (std::log(total) - std::log(s_ref(row[target]))) / static_cast<double>(n);
    for (std::int64_t j = 0; j < v; ++j) {
      const auto k = static_cast<std::size_t>(i * v + j);
      // d/dx_j = s'(x_j) / S - [j == t] s'(x_t) / s(x_t)
      r.grad[k] = (ds_ref(row[j]) / total - (j == target ? ds_ref(row[j]) / s_ref(row[j]) : 0.0)) / static_cast<double>(n);
      // H_jk = [j == k] s''(x_j) / S - s'(x_j) s'(x_k) / S^2 - [j == k == t] (log s)''(x_t)
      if (d) {
        double h = d2s_ref(row[j]) / total * d[j] - ds_ref(row[j]) * ds_dot_d / (total * total);
        if (j == target) h -= d2log_s_ref(row[j]) * d[j];
        r.hv[k] = h / static_cast<double>(n);
      }
    }
  }
  return r;
}

// Logits for one shape: uniform in +-5, with exact zeros, values just either side of 0, and (for the
// wider rows) large magnitudes, where s is linear or tiny.
Tensor logits_for(Rng& rng, std::int64_t n, std::int64_t v, DType dtype) {
  Tensor x = random(rng, {n, v}, DType::f64, -5, 5);
  double* d = x.data<double>();
  const double specials[] = {0.0, -0.0, 1e-7, -1e-7, 1e4, -1e4, 3e7, -3e7};
  for (std::int64_t k = 0; k < n * v; k += 3) d[k] = specials[(k / 3) % (v >= 8 ? 8 : 4)];
  return x.to(dtype);
}

}  // namespace

TEST_CASE("stablemax_cross_entropy: loss and gradient match plain loops", "[ops][stablemax]") {
  for (const DType dtype : {DType::f32, DType::f64}) {
    const double tol = dtype == DType::f32 ? 2e-6 : 1e-13;
    for (const Shape shape : {Shape{1, 1}, Shape{3, 1}, Shape{5, 2}, Shape{9, 13}, Shape{4, 67}}) {
      CAPTURE(dtype_name(dtype), shape);
      Rng rng(40 + static_cast<std::uint64_t>(shape[1]));
      const Tensor x = logits_for(rng, shape[0], shape[1], dtype).set_requires_grad(true);
      const Tensor t = random_ids(rng, {shape[0]}, shape[1]);
      const Reference ref = reference(values(x), values(t), shape[0], shape[1], {});
      tape().clear();
      const Tensor loss = stablemax_cross_entropy(x, t);
      CHECK(loss.dim() == 0);
      CHECK(std::fabs(loss.item() - ref.loss) <= tol * std::max(1.0, std::fabs(ref.loss)));
      // A seed other than 1: the fused backward scales by dloss / N.
      const Tensor seed = Tensor::full({}, -2.5, dtype, Device::cpu());
      const TensorList g = grad({loss}, {x}, {seed});
      std::vector<double> expected = ref.grad;
      for (double& e : expected) e *= -2.5;
      CHECK(rel_error(values(g[0]), expected) < tol);
      tape().clear();
    }
  }
}

TEST_CASE("stablemax_cross_entropy: Hessian-vector products match plain loops, at 0 as for x >= 0",
          "[ops][stablemax][second-order]") {
  for (const Shape shape : {Shape{1, 1}, Shape{3, 2}, Shape{9, 13}, Shape{4, 67}}) {
    CAPTURE(shape);
    Rng rng(60 + static_cast<std::uint64_t>(shape[1]));
    const Tensor x = logits_for(rng, shape[0], shape[1], DType::f64).set_requires_grad(true);
    const Tensor t = random_ids(rng, {shape[0]}, shape[1]);
    const Tensor dir = random(rng, shape);
    const Reference ref = reference(values(x), values(t), shape[0], shape[1], values(dir));
    tape().clear();
    const TensorList hv = hessian_vector_product(stablemax_cross_entropy(x, t), {x}, {dir});
    CHECK(rel_error(values(hv[0]), ref.hv) < 1e-12);
    tape().clear();
  }
}

TEST_CASE("stablemax_cross_entropy: third derivatives match finite differences", "[ops][stablemax][second-order]") {
  // f(x) = d loss / dx, recorded; gradgradcheck then compares f's second derivative, the loss's third.
  const Function first_derivative = [](const TensorList& xs) {
    GradModeGuard on(true);
    const Tensor x = xs[0].requires_grad() ? xs[0] : xs[0].clone().set_requires_grad(true);
    return grad({stablemax_cross_entropy(x, xs[1])}, {x}, {}, {.create_graph = true})[0];
  };
  Rng rng(5);
  const TensorList inputs{random(rng, {4, 5}, DType::f64, -3, 3), random_ids(rng, {4}, 5)};
  const GradCheckResult r = gradgradcheck(first_derivative, inputs);
  INFO("worst " << r.worst);
  CHECK(r.max_rel_error < 1e-5);
  tape().clear();
}

TEST_CASE("stablemax_cross_entropy: huge logits stay finite, a NaN makes the loss NaN", "[ops][stablemax]") {
  for (const DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dtype));
    const Tensor t = Tensor::from_vector<std::int32_t>({0, 2}, {2});
    const Tensor big = Tensor::from_vector<double>({3e37, -3e37, 1.0, -1e30, 2e37, 0.5}, {2, 3}).to(dtype);
    const Reference ref = reference(values(big), values(t), 2, 3, {});
    const double loss = stablemax_cross_entropy(big, t).item();
    CHECK(std::isfinite(loss));
    CHECK(std::fabs(loss - ref.loss) < 1e-6 * std::fabs(ref.loss));
    const Tensor nan = Tensor::from_vector<double>({0.5, std::nan(""), 1.0, 2.0, 0.0, -1.0}, {2, 3}).to(dtype);
    CHECK(std::isnan(stablemax_cross_entropy(nan, t).item()));
  }
}

TEST_CASE("stablemax_cross_entropy: input errors name the op and the problem", "[ops][stablemax][errors]") {
  Rng rng(3);
  const Tensor logits = random(rng, {2, 4});
  CHECK_THROWS_WITH(stablemax_cross_entropy(logits, Tensor::from_vector<std::int32_t>({1, 4}, {2})),
                    ContainsSubstring("stablemax_cross_entropy: target 4 at row 1 is outside [0, 4)"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(logits, Tensor::from_vector<std::int32_t>({-1, 0}, {2})),
                    ContainsSubstring("stablemax_cross_entropy: target -1 at row 0"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(logits, Tensor::from_vector<std::int32_t>({1}, {1})),
                    ContainsSubstring("stablemax_cross_entropy: targets [1] i32 cpu do not match logits [2, 4]"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(random(rng, {2, 4, 1}), Tensor::from_vector<std::int32_t>({1, 0}, {2})),
                    ContainsSubstring("stablemax_cross_entropy: logits must be [N, V]"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(random(rng, {2, 0}), Tensor::from_vector<std::int32_t>({0, 0}, {2})),
                    ContainsSubstring("stablemax_cross_entropy: logits [2, 0] f64 cpu are empty"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(logits, logits),
                    ContainsSubstring("stablemax_cross_entropy: targets must be an i32 tensor"));
  CHECK_THROWS_WITH(stablemax_cross_entropy(Tensor::from_vector<std::int32_t>({1, 0}, {1, 2}),
                                            Tensor::from_vector<std::int32_t>({1}, {1})),
                    ContainsSubstring("stablemax_cross_entropy: logits must be a floating tensor"));
}

TEST_CASE("both cross-entropies copy the targets to the host unless an IdsCheckedGuard vouches for them",
          "[ops][stablemax][sync-free]") {
  Rng rng(4);
  const Tensor logits = random(rng, {3, 5});
  const Tensor t = random_ids(rng, {3}, 5);
  using Loss = Tensor (*)(const Tensor&, const Tensor&);
  for (const Loss loss : {Loss(&stablemax_cross_entropy), Loss(&cross_entropy)}) {
    HostReadGuard no_reads("a sync-free step");
    CHECK_THROWS_WITH(loss(logits, t), ContainsSubstring("a sync-free step"));
    IdsCheckedGuard checked;
    CHECK_NOTHROW(loss(logits, t));
  }
}

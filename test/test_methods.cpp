// The methods layer: the factory's list and order, ⊥Grad and per-tensor normalisation against naive
// host computations of their formulas (docs/methods.md), and that neither reads the host mid-step.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>

#include "engine/backend.h"
#include "experiments/methods/method_factory.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::WithinAbs;

namespace {

// Three tensors of awkward sizes (padded in the flat buffers): random weights, random gradients,
// except that tensor "zero" has all-zero weights and tensor "along" a gradient almost parallel to its
// weights (-0.25 w plus a small random part, which the rescaling blows up to the whole norm).
struct Fixture {
  ParameterTable params;
  std::vector<std::vector<double>> w, g;  // per tensor, as set
};

Fixture make_fixture(DType dtype, Device device) {
  Fixture f{ParameterTable({{"a", {7, 3}}, {"zero", {5}}, {"along", {2, 9}}}, dtype, device), {}, {}};
  Rng rng(11);
  for (std::size_t i = 0; i < f.params.size(); ++i) {
    const std::int64_t n = f.params[i].numel();
    std::vector<double> w(static_cast<std::size_t>(n)), g(w.size());
    for (std::size_t k = 0; k < w.size(); ++k) {
      w[k] = f.params.name(i) == "zero" ? 0.0 : rng.normal();
      g[k] = f.params.name(i) == "along" ? -0.25 * w[k] + 0.01 * rng.normal() : rng.normal();
    }
    Tensor value = f.params[i], grad = f.params[i].grad();
    value.copy_from_(Tensor::from_vector(w, f.params[i].shape()).to(dtype).to(device));
    grad.copy_from_(Tensor::from_vector(g, f.params[i].shape()).to(dtype).to(device));
    f.w.push_back(w);
    f.g.push_back(g);
  }
  return f;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

MethodList methods_for(const TrainConfig& config, const ParameterTable& params) {
  static const Dataset data;
  static const Split split;
  Rng rng(0);
  return make_gradient_methods({config, params, data, split, rng});
}

}  // namespace

TEST_CASE("the method factory: standard is no method, --grad-normalize comes last, unknown names list the known",
          "[methods]") {
  const ParameterTable params({{"w", {3}}}, DType::f32, Device::cpu());
  TrainConfig c;
  CHECK(methods_for(c, params).empty());
  c.method = "perp-grad";
  c.grad_normalize = 1.0;
  const MethodList both = methods_for(c, params);
  REQUIRE(both.size() == 2);
  CHECK(std::string(both[0]->name()) == "perp-grad");
  CHECK(std::string(both[1]->name()) == "per-tensor normalisation");
  c.method = "perpgrad";
  CHECK_THROWS_WITH(methods_for(c, params),
                    ContainsSubstring("--method 'perpgrad': expected standard | grokfast-ema | grokfast-ma | "
                                      "neuralgrok | perp-grad"));
}

TEST_CASE("perp-grad removes each tensor's component along its weights and keeps its norm (float64 reference)",
          "[methods][perp-grad]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    Fixture f = make_fixture(dtype, Device::cpu());
    TrainConfig c;
    c.method = "perp-grad";
    MethodList methods = methods_for(c, f.params);
    methods[0]->transform(f.params, StepContext{});
    const double tol = dtype == DType::f64 ? 1e-11 : 1e-4;
    for (std::size_t i = 0; i < f.params.size(); ++i) {
      CAPTURE(f.params.name(i));
      const std::vector<double>& w = f.w[i];
      const std::vector<double>& g = f.g[i];
      // g_perp = g - (<w, g> / <w, w>) w, then ||g|| / ||g_perp|| times it; 0 / 0 gives 0.
      const double ww = dot(w, w);
      const double coefficient = ww > 0 ? dot(w, g) / ww : 0.0;
      std::vector<double> perp;
      for (std::size_t k = 0; k < g.size(); ++k) perp.push_back(g[k] - coefficient * w[k]);
      const double perp_norm = std::sqrt(dot(perp, perp));
      const double rescale = std::sqrt(dot(g, g)) / perp_norm;
      const std::vector<double> got = values(f.params[i].grad());
      for (std::size_t k = 0; k < g.size(); ++k) {
        CHECK_THAT(got[k], WithinAbs(perp[k] * rescale, tol));
      }
      CHECK_THAT(dot(got, w), WithinAbs(0.0, 50 * tol));
      CHECK_THAT(std::sqrt(dot(got, got)), WithinAbs(std::sqrt(dot(g, g)), 50 * tol));
      if (f.params.name(i) == "zero") CHECK(got == values(Tensor::from_vector(g, {5}).to(dtype)));  // unchanged: nothing to project out
    }
    double everywhere = 0, inside = 0;  // equal: the flat buffer's padding stays zero
    for (double v : values(f.params.flat_grads())) everywhere += std::abs(v);
    for (std::size_t i = 0; i < f.params.size(); ++i) {
      for (double v : values(f.params[i].grad())) inside += std::abs(v);
    }
    CHECK(everywhere == inside);
  }
}

TEST_CASE("per-tensor normalisation through the factory scales each tensor's gradient to norm c", "[methods]") {
  Fixture f = make_fixture(DType::f64, Device::cpu());
  TrainConfig c;
  c.grad_normalize = 2.5;
  MethodList methods = methods_for(c, f.params);
  REQUIRE(methods.size() == 1);
  methods[0]->transform(f.params, StepContext{});
  for (std::size_t i = 0; i < f.params.size(); ++i) {
    const double norm = std::sqrt(dot(f.g[i], f.g[i]));
    const std::vector<double> got = values(f.params[i].grad());
    for (std::size_t k = 0; k < got.size(); ++k) CHECK_THAT(got[k], WithinAbs(2.5 * f.g[i][k] / norm, 1e-12));
  }
}

TEST_CASE("perp-grad and per-tensor normalisation read nothing on the host in a sync-free step", "[methods]") {
  Fixture f = make_fixture(DType::f32, Device::cpu());
  TrainConfig c;
  c.method = "perp-grad";
  c.grad_normalize = 1.0;
  MethodList methods = methods_for(c, f.params);
  HostReadGuard no_host_reads("a test's sync-free step");
  for (auto& m : methods) {
    CHECK(m->replayable());
    m->transform(f.params, StepContext{1, true, nullptr});
  }
}

TEST_CASE("a method without a recorded form refuses a recorded step by name", "[methods]") {
  const ParameterTable params({{"w", {3}}}, DType::f64, Device::cpu());
  TrainConfig c;
  c.method = "perp-grad";
  MethodList methods = methods_for(c, params);
  CHECK_FALSE(methods[0]->records_steps());
  CHECK_THROWS_WITH(methods[0]->transform_recorded(Tensor::zeros({3}, DType::f64, Device::cpu()), {{0, 3}}),
                    ContainsSubstring("gradient method 'perp-grad' has no recorded form"));
}

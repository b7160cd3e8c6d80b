// AGE / AWE (optim/entropy_metrics.h) against direct float64 sums, with exact zeros (0 ln 0 = 0).
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>

#include "optim/amplifier.h"
#include "optim/entropy_metrics.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;

namespace {

double direct(const std::vector<double>& x, std::int64_t begin, std::int64_t size) {
  double s = 0.0;
  for (std::int64_t i = begin; i < begin + size; ++i) {
    const double a = std::abs(x[static_cast<std::size_t>(i)]);
    if (a > 0) s -= a * std::log(a);
  }
  return s;
}

// Random values in (-2, 2) (|x| > 1 gives negative terms) with every third entry exactly zero.
Tensor with_zeros(Rng& rng, std::int64_t n, DType dtype) {
  std::vector<double> v = values(random(rng, {n}, DType::f64, -2.0, 2.0));
  for (std::size_t i = 0; i < v.size(); i += 3) v[i] = 0.0;
  return Tensor::from_vector(v, {n}).to(dtype);
}

ParameterTable filled_table(Rng& rng, DType dtype, Device device = Device::cpu()) {
  ParameterTable t({{"a", {17, 3}}, {"b", {1}}, {"c", {200}}, {"d", {4, 4}}}, dtype, Device::cpu());
  for (std::size_t i = 0; i < t.size(); ++i) {
    Tensor p = t[i];
    p.copy_from_(reshape(with_zeros(rng, p.numel(), dtype), p.shape()));
    Tensor g = p.grad();
    g.copy_from_(reshape(with_zeros(rng, p.numel(), dtype), p.shape()));
  }
  if (device.is_cpu()) return t;
  ParameterTable d(t.specs(), dtype, device);
  Tensor v = d.flat_values(), g = d.flat_grads();
  v.copy_from_(t.flat_values());
  g.copy_from_(t.flat_grads());
  return d;
}

}  // namespace

TEST_CASE("AGE and AWE match direct float64 sums per tensor and in total", "[entropy]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    Rng rng(4);
    const ParameterTable t = filled_table(rng, dtype);
    const EntropyStats age = gradient_entropy(t);
    const EntropyStats awe = weight_entropy(t);
    const std::vector<double> g = values(t.flat_grads()), w = values(t.flat_values());
    REQUIRE(age.per_tensor.size() == t.size());
    REQUIRE(awe.per_tensor.size() == t.size());
    const double tol = dtype == DType::f64 ? 1e-13 : 1e-6;
    double total_g = 0.0, total_w = 0.0;
    for (std::size_t i = 0; i < t.size(); ++i) {
      CAPTURE(t.name(i));
      CHECK(age.names[i] == t.name(i));
      const double eg = direct(g, t.offset(i), t[i].numel()), ew = direct(w, t.offset(i), t[i].numel());
      CHECK(std::abs(age.per_tensor[i] - eg) <= tol * std::max(1.0, std::abs(eg)));
      CHECK(std::abs(awe.per_tensor[i] - ew) <= tol * std::max(1.0, std::abs(ew)));
      total_g += age.per_tensor[i];
      total_w += awe.per_tensor[i];
    }
    CHECK(age.total == total_g);
    CHECK(awe.total == total_w);
    // The whole model: the concatenation of every gradient (padding zeros contribute nothing).
    const double all = direct(g, 0, static_cast<std::int64_t>(g.size()));
    CHECK(std::abs(age.total - all) <= tol * std::abs(all));
  }
}

TEST_CASE("abs_entropy: zeros give 0, gaps are skipped, segments are checked", "[entropy]") {
  const Tensor zeros = Tensor::zeros({10}, DType::f64);
  CHECK(abs_entropy(zeros, {{0, 10}}).total == 0.0);
  // x = e^-1: -|x| ln |x| = e^-1; x = 1: 0. The gap holds a value that must not count.
  const double e1 = std::exp(-1.0);
  const Tensor x = Tensor::from_vector<double>({e1, -e1, 0.5, 1.0, 0.0, -0.25}, {6});
  const EntropyStats s = abs_entropy(x, {{0, 2}, {3, 3}});
  REQUIRE(s.per_tensor.size() == 2);
  CHECK(std::abs(s.per_tensor[0] - 2 * e1) < 1e-15);
  CHECK(std::abs(s.per_tensor[1] - 0.25 * std::log(4.0)) < 1e-15);
  CHECK(s.names.empty());
  CHECK_THROWS_WITH(abs_entropy(x, {{3, 2}, {0, 2}}), ContainsSubstring("abs_entropy: segment 1"));
  CHECK_THROWS_WITH(abs_entropy(x, {{4, 5}}), ContainsSubstring("outside the buffer"));
  // The amplifier's transformed gradients over the table's layout.
  Rng rng(5);
  const ParameterTable t = filled_table(rng, DType::f64);
  const EntropyStats via_flat = gradient_entropy(t, t.flat_grads(), parameter_segments(t));
  CHECK(via_flat.per_tensor == gradient_entropy(t).per_tensor);
  CHECK_THROWS_WITH(gradient_entropy(t, t.flat_grads(), {{0, 3}}), ContainsSubstring("1 segments for a table of 4"));
}

TEST_CASE("AGE on the GPU matches the CPU", "[entropy][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  Rng rng(6);
  const ParameterTable cpu = filled_table(rng, DType::f64);
  Rng rng2(6);
  const ParameterTable gpu = filled_table(rng2, DType::f32, Device::cuda(0));
  const EntropyStats a = gradient_entropy(cpu), b = gradient_entropy(gpu);
  REQUIRE(a.per_tensor.size() == b.per_tensor.size());
  CHECK(rel_error(b.per_tensor, a.per_tensor) < 1e-5);
  CHECK(std::abs(b.total - a.total) < 1e-5 * std::abs(a.total));
  // One launch over a big buffer too.
  const Tensor big = with_zeros(rng, 420000, DType::f64);
  const EntropyStats c = abs_entropy(big, {{0, 300000}, {300032, 119968}});
  const EntropyStats d = abs_entropy(big.to(DType::f32).to(Device::cuda(0)), {{0, 300000}, {300032, 119968}});
  CHECK(rel_error(d.per_tensor, c.per_tensor) < 1e-5);
}

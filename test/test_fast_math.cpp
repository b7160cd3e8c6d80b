// The vectorisable float exp and normal CDF/density used by the CPU kernels, against libm in double.
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/fast_math.h"

using namespace tg::cpu;

namespace {
double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); }
}  // namespace

TEST_CASE("float exp_approx is within a few ulps of exp over the float range", "[fast-math]") {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    const float xf = static_cast<float>(x);
    worst = std::max(worst, rel(exp_approx(xf), std::exp(static_cast<double>(xf))));
  }
  CHECK(worst < 5e-7);
  CHECK(std::isnan(exp_approx(std::nanf(""))));
  CHECK(exp_approx(-1000.0f) >= 0.0f);
  CHECK(exp_approx(-1000.0f) < 1e-37f);
}

TEST_CASE("float normal CDF and density: relative accuracy where the values matter, tiny error beyond",
          "[fast-math]") {
  // For |x| <= 6 the relative error is bounded by float rounding of x^2 inside the exponent
  // (about |x|^2 / 2 * 6e-8) plus the fit; beyond, only the absolute error matters.
  double worst_cdf = 0, worst_pdf = 0, worst_tail = 0;
  for (double x = -12.0; x <= 12.0; x += 0.0005) {
    const float xf = static_cast<float>(x);
    const double xd = xf;
    const double cdf = 0.5 * std::erfc(-xd / std::sqrt(2.0)), pdf = std::exp(-0.5 * xd * xd) / std::sqrt(2 * M_PI);
    if (std::fabs(xd) <= 6.0) {
      worst_cdf = std::max(worst_cdf, rel(normal_cdf(xf), cdf));
      worst_pdf = std::max(worst_pdf, rel(normal_pdf(xf), pdf));
    } else {
      worst_tail = std::max({worst_tail, std::fabs(double(normal_pdf(xf)) - pdf), std::fabs(double(normal_cdf(xf)) - cdf)});
    }
  }
  CHECK(worst_cdf < 5e-6);
  CHECK(worst_pdf < 5e-6);
  CHECK(worst_tail < 1e-7);  // half a float ulp at 1: Phi(x > 6) rounds to 1
  // The double overloads are libm itself.
  CHECK(normal_cdf(0.3) == 0.5 * std::erfc(-0.3 * 0.70710678118654752));
}

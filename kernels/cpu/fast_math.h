// Branch-free float versions of exp and the normal CDF/density that the compiler can vectorise
// (libm's expf/erff are scalar calls). exp_approx is within a few ulps (relative error < 5e-7); the
// normal CDF/density within 5e-6 relative for |x| <= 6 (float rounding of x^2 in the exponent) and
// 1e-7 absolute beyond, where the density is below 1e-8 and the CDF within a float ulp of 0 or 1
// (test/test_fast_math.cpp). The double overloads call libm, so float64 gradient checks stay exact.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace tg::cpu {

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-7 Taylor polynomial (error < 6e-9),
// 2^n assembled in the exponent bits. Inputs are clamped to the finite float range.
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : x;  // keeps 2^n a normal float (NaN passes through)
  x = x > 88.3f ? 88.3f : x;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (vectorises; nearbyint may not).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;  // ln2 split hi + lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}
inline double exp_approx(double x) { return std::exp(x); }

// erfc(z) for z >= 0 with relative error < 1.2e-7 everywhere (the Chebyshev fit of Numerical
// Recipes' erfcc), so the normal CDF keeps its relative accuracy deep in the tail.
inline float erfc_nonnegative(float z) {
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * exp_approx(-z * z + p);
}

// Phi(x) = P(N(0, 1) <= x) = erfc(-x / sqrt 2) / 2
inline float normal_cdf(float x) {
  const float half_tail = 0.5f * erfc_nonnegative(std::fabs(x) * 0.70710678118654752f);
  return x <= 0.0f ? half_tail : 1.0f - half_tail;
}
inline double normal_cdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752); }

// phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
inline float normal_pdf(float x) { return exp_approx(-0.5f * x * x) * 0.398942280401432678f; }
inline double normal_pdf(double x) { return std::exp(-0.5 * x * x) * 0.398942280401432678; }

}  // namespace tg::cpu

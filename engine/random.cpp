#include "engine/random.h"

#include <cmath>
#include <numbers>

namespace tg {

namespace {
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

template <class F>
Tensor host_tensor(const Shape& shape, DType dtype, Device device, F&& sample) {
  const auto n = static_cast<std::size_t>(shape_numel(shape));
  if (dtype == DType::f64) {
    std::vector<double> v(n);
    for (auto& x : v) x = sample();
    return Tensor::from_vector(v, shape, device);
  }
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(sample());
  return Tensor::from_vector(v, shape, device);
}
}  // namespace

Rng::Rng(std::uint64_t seed) {
  for (auto& word : s_) word = splitmix64(seed);
}

std::uint64_t Rng::next_u64() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
double Rng::uniform(double low, double high) { return low + (high - low) * uniform(); }

double Rng::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::int64_t Rng::below(std::int64_t n) {
  const auto range = static_cast<std::uint64_t>(n);
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % range;  // reject the biased tail
  std::uint64_t x;
  do {
    x = next_u64();
  } while (x >= limit);
  return static_cast<std::int64_t>(x % range);
}

Tensor uniform_tensor(Rng& rng, const Shape& shape, double low, double high, DType dtype, Device device) {
  return host_tensor(shape, dtype, device, [&] { return rng.uniform(low, high); });
}

Tensor normal_tensor(Rng& rng, const Shape& shape, double mean, double stddev, DType dtype, Device device) {
  return host_tensor(shape, dtype, device, [&] { return mean + stddev * rng.normal(); });
}

}  // namespace tg

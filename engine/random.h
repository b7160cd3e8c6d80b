// A small, portable random number generator (xoshiro256**, seeded through splitmix64).
// The standard library's distributions differ between implementations; these transforms are ours,
// so the same seed gives the same numbers on every machine, and the whole state can be saved in a
// checkpoint and restored.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace tg {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0);

  std::uint64_t next_u64();
  double uniform();                                // [0, 1), 53 random bits
  double uniform(double low, double high);         // [low, high)
  double normal();                                 // standard normal (Box-Muller, no caching)
  std::int64_t below(std::int64_t n);              // uniform integer in [0, n), unbiased
  template <class T> void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<std::size_t>(below(static_cast<std::int64_t>(i)))]);
  }

  std::array<std::uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<std::uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<std::uint64_t, 4> s_;
};

// Tensors filled on the host from `rng` and copied to `device` (identical values on every device).
Tensor uniform_tensor(Rng& rng, const Shape& shape, double low, double high, DType dtype = DType::f32,
                      Device device = Device::cpu());
Tensor normal_tensor(Rng& rng, const Shape& shape, double mean, double stddev, DType dtype = DType::f32,
                     Device device = Device::cpu());

}  // namespace tg

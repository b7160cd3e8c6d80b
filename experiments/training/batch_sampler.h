// Mini-batches by shuffled epochs: each epoch visits every training example once in a fresh random
// order; the last batch of an epoch may be smaller (as PyTorch's DataLoader with shuffle=True).
// The sampler's whole state (RNG, current order, position) goes into checkpoints, so a resumed run
// sees exactly the batches the uninterrupted run would have.
#pragma once

#include <array>
#include <vector>

#include "engine/random.h"

namespace tg {

class BatchSampler {
 public:
  BatchSampler(std::vector<std::int64_t> examples, std::int64_t batch_size, std::uint64_t seed);

  std::vector<std::int64_t> next();  // example indices of the next batch
  std::int64_t epoch() const { return epoch_; }      // completed epochs
  std::int64_t batches_per_epoch() const;

  struct State {
    std::array<std::uint64_t, 4> rng;
    std::vector<std::int64_t> order;
    std::int64_t cursor = 0, epoch = 0;
  };
  State state() const { return {rng_.state(), order_, cursor_, epoch_}; }
  void set_state(const State& s);  // checks the order is a permutation of this sampler's examples

 private:
  void reshuffle();
  std::vector<std::int64_t> examples_;
  std::int64_t batch_size_;
  Rng rng_;
  std::vector<std::int64_t> order_;
  std::int64_t cursor_ = 0, epoch_ = 0;
};

}  // namespace tg

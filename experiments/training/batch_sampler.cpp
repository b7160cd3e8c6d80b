#include "experiments/training/batch_sampler.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/error.h"

namespace tg {

BatchSampler::BatchSampler(std::vector<std::int64_t> examples, std::int64_t batch_size, std::uint64_t seed)
    : examples_(std::move(examples)), batch_size_(batch_size), rng_(seed) {
  TG_CHECK(!examples_.empty(), "batch sampler: no training examples");
  TG_CHECK(batch_size_ >= 1, "batch sampler: batch size must be at least 1, got {}", batch_size_);
  reshuffle();
}

std::int64_t BatchSampler::batches_per_epoch() const {
  const auto n = static_cast<std::int64_t>(examples_.size());
  return (n + batch_size_ - 1) / batch_size_;
}

void BatchSampler::reshuffle() {
  order_ = examples_;
  rng_.shuffle(order_);
  cursor_ = 0;
}

std::vector<std::int64_t> BatchSampler::next() {
  if (cursor_ >= static_cast<std::int64_t>(order_.size())) {
    ++epoch_;
    reshuffle();
  }
  const std::int64_t end = std::min<std::int64_t>(cursor_ + batch_size_, static_cast<std::int64_t>(order_.size()));
  std::vector<std::int64_t> batch(order_.begin() + cursor_, order_.begin() + end);
  cursor_ = end;
  return batch;
}

void BatchSampler::set_state(const State& s) {
  std::vector<std::int64_t> a = s.order, b = examples_;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  TG_CHECK(a == b, "batch sampler state: the saved example order does not match this run's training set "
                   "(different task, split or seed?)");
  TG_CHECK(s.cursor >= 0 && s.cursor <= static_cast<std::int64_t>(s.order.size()) && s.epoch >= 0,
           "batch sampler state: position {} / epoch {} out of range", s.cursor, s.epoch);
  rng_.set_state(s.rng);
  order_ = s.order;
  cursor_ = s.cursor;
  epoch_ = s.epoch;
}

}  // namespace tg

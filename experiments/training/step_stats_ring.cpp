#include "experiments/training/step_stats_ring.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

StepStatsRing::StepStatsRing(std::int64_t capacity, DType dtype, Device device) : capacity_(capacity) {
  TG_CHECK(capacity >= 1, "step statistics ring: capacity must be at least 1, got {}", capacity);
  slot_ = Tensor::zeros({kColumns}, dtype, device);
  ring_ = Tensor::zeros({capacity, kColumns}, dtype, device);
}

void StepStatsRing::commit(std::int64_t step, std::int64_t examples, double lr) {
  TG_CHECK(capacity_ > 0, "step statistics ring: commit on an empty ring");
  if (static_cast<std::int64_t>(in_ring_.size()) == capacity_) drain();
  const auto row = static_cast<std::int64_t>(in_ring_.size());
  Tensor dst = ring_.as_strided({kColumns}, {1}, row * kColumns);
  dst.copy_from_(slot_);
  in_ring_.push_back({step, examples, lr, 0, 0, 0});
}

void StepStatsRing::drain() {
  if (in_ring_.empty()) return;
  const auto rows = static_cast<std::int64_t>(in_ring_.size());
  const Tensor used = ring_.as_strided({rows * kColumns}, {1}, 0);
  std::vector<double> values;
  if (used.dtype() == DType::f64) {
    values = used.to_vector<double>();
  } else {
    const std::vector<float> f = used.to_vector<float>();  // float -> double, as .item() reads it
    values.assign(f.begin(), f.end());
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    Row row = in_ring_[static_cast<std::size_t>(r)];
    row.loss = values[static_cast<std::size_t>(r * kColumns + kLoss)];
    row.correct = values[static_cast<std::size_t>(r * kColumns + kCorrect)];
    row.grad_norm = values[static_cast<std::size_t>(r * kColumns + kGradNorm)];
    on_host_.push_back(row);
  }
  in_ring_.clear();
}

std::vector<StepStatsRing::Row> StepStatsRing::read() {
  drain();
  std::vector<Row> rows;
  rows.swap(on_host_);
  return rows;
}

void StepStatsRing::clear() {
  in_ring_.clear();
  on_host_.clear();
}

}  // namespace tg

// Where sync-free training steps (--cuda-graph, experiments/training/trainer.h) leave their statistics.
//
// A normal step reads its loss, correct predictions and gradient norm on the host (.item(): the host
// waits for the device every step). A sync-free step has device ops write them into slot() instead,
// a fixed [3] buffer (a captured graph writes the same address at every replay), and commit() copies
// the slot into the next row of a device ring [capacity, 3], outside any graph. read() brings all
// committed rows to the host at once, when the trainer logs: one wait per evaluation. If more steps
// are committed than the ring holds, its rows are read early (one wait per `capacity` steps).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace tg {

class StepStatsRing {
 public:
  struct Row {
    std::int64_t step = 0, examples = 0;  // known on the host
    double lr = 0;
    double loss = 0, correct = 0, grad_norm = 0;  // written on the device
  };
  // Slot columns.
  static constexpr std::int64_t kLoss = 0, kCorrect = 1, kGradNorm = 2, kColumns = 3;

  StepStatsRing() = default;
  StepStatsRing(std::int64_t capacity, DType dtype, Device device);

  const Tensor& slot() const { return slot_; }  // [3]: loss, correct predictions, raw gradient norm
  // Appends the slot's current values (a device copy, no wait) as the statistics of `step`.
  void commit(std::int64_t step, std::int64_t examples, double lr);
  // Every row committed since the last read, in step order (waits for the device), and empties the ring.
  std::vector<Row> read();
  void clear();  // forgets the committed rows (a checkpoint was loaded)
  std::int64_t pending() const { return static_cast<std::int64_t>(on_host_.size() + in_ring_.size()); }

 private:
  void drain();  // ring rows -> on_host_ (one wait)

  Tensor slot_, ring_;  // [3], [capacity, 3]
  std::int64_t capacity_ = 0;
  std::vector<Row> in_ring_;  // host fields of the rows now in the ring (row i of ring_ is in_ring_[i])
  std::vector<Row> on_host_;    // complete rows already brought to the host (the ring filled up before read())
};

}  // namespace tg

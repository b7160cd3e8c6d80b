// Optimizers over a ParameterTable's flat buffers: each update is one kernel over all parameters.
// State (moment buffers, step count) is exposed as named tensors for checkpoints.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "engine/parameters.h"

namespace tg {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of every parameter from its .grad (the table's flat gradient buffer), at learning rate lr.
  virtual void step(const ParameterTable& params, double lr) = 0;
  std::int64_t steps_taken() const { return steps_; }

  // Checkpoint state: named flat buffers plus the step count.
  virtual std::map<std::string, Tensor> state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) = 0;

 protected:
  std::int64_t steps_ = 0;
};

struct AdamConfig {
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8, weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // false: torch.optim.Adam (L2 added to the gradient); true: AdamW
};

struct SgdConfig {
  double momentum = 0.0, weight_decay = 0.0;
};

std::unique_ptr<Optimizer> make_adam(const ParameterTable& params, AdamConfig config);
std::unique_ptr<Optimizer> make_sgd(const ParameterTable& params, SgdConfig config);

// Learning rate at update `step` (0-based) under linear warm-up: lr * min(step / warmup, 1), as the
// reference code's LambdaLR(lambda update: min(update / warmup, 1)) — the very first update has lr 0.
double warmup_lr(double lr, std::int64_t step, std::int64_t warmup_steps);

}  // namespace tg

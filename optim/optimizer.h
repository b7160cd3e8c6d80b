// Optimizers over a ParameterTable's flat buffers: each update is one kernel over all parameters.
// State (moment buffers, step count) is exposed as named tensors for checkpoints.
//
// Two ways to take a step: step(params, lr) passes the step's values (lr, Adam's bias corrections) as
// kernel arguments; the sync-free path (--cuda-graph) writes them to a small device tensor first
// (device_scalars) and step_from_device reads them there, so one captured launch serves every step.
// Both give bit-identical parameters.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/parameters.h"

namespace tg {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of every parameter from its .grad (the table's flat gradient buffer), at learning rate lr.
  // With a GradClip (engine/backend.h) the update clips each gradient as it reads it — clip_grad_norm
  // and the step in one pass, with the same result — and leaves .grad unclipped.
  virtual void step(const ParameterTable& params, double lr, const GradClip& clip) = 0;
  void step(const ParameterTable& params, double lr) { step(params, lr, GradClip{}); }
  std::int64_t steps_taken() const { return steps_; }

  // ---- sync-free steps ----
  // The values the next update at learning rate lr reads from its scalars tensor, in double (the
  // caller rounds them to the parameters' dtype and uploads them before the step): Adam's
  // adam_device_scalars (engine/backend.h) for step steps_taken() + 1, SGD's (lr, first step).
  virtual std::vector<double> device_scalars(double lr) const = 0;
  // Those values rounded to `scalars`' dtype (as the kernels round host scalars) and copied into it
  // without waiting for the device (Backend::copy_from_host_async), before the step's device work.
  void upload_device_scalars(double lr, const Tensor& scalars) const;
  // One update reading those values from `scalars` (a device tensor of the parameters' dtype with
  // device_scalars().size() elements) instead of kernel arguments; counts the step like step().
  virtual void step_from_device(const ParameterTable& params, const Tensor& scalars, const GradClip& clip) = 0;
  // The host half of step_from_device alone, for a step whose device work a graph replay did.
  void count_replayed_step() { ++steps_; }

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

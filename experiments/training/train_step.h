// One training step, the only one: forward, loss, gradient, statistics, gradient methods, clipping,
// optimizer update. The mode says where values go, not what is computed:
//
//   eager      values reach the host as soon as they exist: a non-finite loss or gradient norm stops
//              the step before the update.
//   sync_free  nothing is read on the host (a HostReadGuard makes a read an error): loss, correct
//              predictions and gradient norm go to a device slot, read and checked when the trainer
//              logs. On a GPU the trainer captures this as a CUDA graph. Bit-identical to eager.
//   recorded   the whole step is recorded on the tape across a window of steps, for a method that
//              differentiates through training (NeuralGrok's unrolled meta-gradient): the gradient is
//              taken with create_graph, the methods transform it in recorded ops, and a
//              differentiable optimizer update produces the next recorded parameters.
//
// The step in straight-line calls (eager; the other modes differ where marked):
//   logits = model.forward(params, ids)           [B, V]      (recorded: the window's parameters)
//   loss   = training_loss(logits, targets)       []          cross-entropy or StableMax
//   backward(loss) -> params.flat_grads()                     (recorded: grad(create_graph))
//   loss, correct, ||g|| -> host, checked                     (sync_free: -> device slot)
//   method.prepare / transform, in order                      experiments/methods/
//   clip folded into the optimizer's pass (deferred_clip_grad_norm)
//   optimizer.step(params, lr, clip)                          (sync_free: lr from a device tensor;
//                                                               recorded: adam_update / sgd_update)
#pragma once

#include "engine/parameters.h"
#include "experiments/methods/gradient_method.h"
#include "experiments/training/train_config.h"
#include "models/model.h"
#include "optim/differentiable_step.h"
#include "optim/entropy_metrics.h"
#include "optim/optimizer.h"

namespace tg {

enum class StepMode { eager, sync_free, recorded };

struct StepStats {
  double loss = 0, accuracy = 0, grad_norm = 0, lr = 0;  // grad_norm: of the raw gradient
  std::int64_t examples = 0;
  // Gradient entropies (AGE) of the raw gradient and of what the optimizer gets (before clipping),
  // measured when asked (steps that end in an evaluation); empty otherwise.
  EntropyStats age_raw, age_transformed;
  // A sync-free step: loss, accuracy and grad_norm are still on the device (NaN here).
  bool on_device = false;
};

// The run's objects a step works on (the Trainer owns them).
struct StepParts {
  const TrainConfig& config;
  const Model& model;
  const ParameterTable& params;
  Optimizer& optimizer;
  MethodList& methods;
};

// What changes from step to step.
struct StepInput {
  Tensor ids, targets;   // i32 [B, S], i32 [B], on the run's device
  std::int64_t step = 1;  // this step's number, counted from 1
  double lr = 0;          // after warm-up
  bool with_entropy = false;
};

// Where a sync-free step writes what an eager step reads on the host.
struct DeviceSlots {
  Tensor stats;                    // [3]: loss, correct predictions, raw gradient norm (StepStatsRing)
  Tensor age_raw, age_transformed; // gradient_entropy_on_device's layout
  Tensor optimizer_scalars;        // the step's lr and bias corrections (Optimizer::device_scalars)
};

// The recorded parameters and optimizer moments of the open window (recorded mode).
struct RecordedWindow {
  bool open = false;
  std::int64_t steps = 0;
  TensorList theta;      // recorded parameters after the window's steps so far
  AdamMoments moments;   // recorded Adam moments (Adam and AdamW)
};

// The loss the run trains on: mean over the batch, logits [B, V], targets i32 [B] -> [].
Tensor training_loss(const TrainConfig& config, const Tensor& logits, const Tensor& targets);

// One step. `slots` is used in sync_free mode, `window` in recorded mode (may be null otherwise).
StepStats train_step(StepMode mode, const StepParts& parts, const StepInput& in, const DeviceSlots* slots,
                     RecordedWindow* window);

}  // namespace tg

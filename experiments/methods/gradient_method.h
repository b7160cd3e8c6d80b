// What a gradient method is to the training step (experiments/training/train_step.h): something that
// rewrites the raw gradient before the optimizer sees it, may learn on the side (a meta step), and
// keeps state that checkpoints carry. Standard training uses none; `--grad-normalize` adds one after
// the chosen method. The formulas are in docs/methods.md; how to add a method in docs/architecture.md.
//
// A step calls, in this order:
//   prepare(step)                 on the host, before the step's device work (outside a CUDA graph)
//   transform(params, step)       the raw gradient in params.flat_grads() -> what the optimizer gets
// or, for a method that differentiates through training (records_steps()), instead of transform:
//   transform_recorded(g, ...)    the same rewrite as recorded ops on a recorded flat gradient
//   end_recorded_step(...)        after the recorded update (NeuralGrok's unrolled meta step)
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/parameters.h"
#include "engine/safetensors.h"
#include "models/model.h"

namespace tg {

// The step a method is called for.
struct StepContext {
  std::int64_t step = 1;         // this step's number, counted from 1
  bool sync_free = false;        // nothing may be read on the host (a CUDA graph may be capturing)
  const Model* model = nullptr;  // the model being trained (NeuralGrok's look-ahead loss)
};

// A method's part of a run checkpoint, under names of its own.
struct MethodCheckpoint {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;
};

class GradientMethod {
 public:
  virtual ~GradientMethod() = default;
  virtual const char* name() const = 0;

  // ---- every step
  // Host work before the step's device work: uploads of per-step values (never inside a capture).
  virtual void prepare(const StepContext&) {}
  // Rewrites params.flat_grads() in place. Under step.sync_free it must not read anything on the host.
  virtual void transform(const ParameterTable& params, const StepContext& step) = 0;

  // ---- CUDA graphs (sync-free steps on a GPU, experiments/training/trainer.h)
  // True when transform() now launches the same kernels with the same arguments for every later step
  // of the same kind, so a captured graph may replay it.
  virtual bool replayable() const { return true; }
  // Steps of one kind share a graph; a method whose step differs (a meta step every T steps) says so.
  virtual bool special_step(const StepContext&) const { return false; }
  // The host half of transform() for a step whose device work a graph replay did.
  virtual void count_replayed_step(const StepContext&) {}
  // Values a sync-free step left on the device, checked when the trainer reads its statistics.
  virtual void check_deferred() const {}

  // ---- recorded steps (second order through training)
  virtual bool records_steps() const { return false; }
  // True when transform_recorded() is implemented (a recorded step runs it in place of transform()).
  virtual bool has_recorded_form() const { return false; }
  // flat_g: [N] recorded, one run per parameter tensor (segments) -> the transformed gradient, recorded.
  virtual Tensor transform_recorded(const Tensor& flat_g, const std::vector<Segment>& segments);
  // After a recorded update: theta is the recorded parameters after `window_steps` steps of the open
  // window. Returns true when the window is finished (its tape may be freed).
  virtual bool end_recorded_step(const Model& model, const TensorList& theta, std::int64_t window_steps);

  // ---- checkpoints, logs, end of run
  virtual MethodCheckpoint checkpoint() const { return {}; }
  // Checks the method's entries in a checkpoint (errors name `path`) and returns what applies them:
  // a checkpoint is applied only after every part of it passed its checks.
  virtual std::function<void()> restore(const SafetensorsFile&, const std::string& /*path*/) {
    return [] {};
  }
  virtual void log(nlohmann::json& /*metrics_record*/) const {}
  virtual void finish(const std::string& /*run_dir*/) const {}
};

// The methods of a run, applied in order.
using MethodList = std::vector<std::unique_ptr<GradientMethod>>;

}  // namespace tg

// The training loop of `tapegrok train`: one model on one modular-arithmetic task.
//
// Trainer::run() repeats Trainer::step() and evaluates, logs and checkpoints between steps. A step is
// the one step function (experiments/training/train_step.h) in one of its modes:
//   eager      the default;
//   recorded   when a gradient method differentiates through training (--meta-grad unrolled);
//   sync_free  with --cuda-graph: the batch is uploaded into fixed input buffers and the optimizer's
//              per-step values (lr, bias corrections) into a small device tensor before the device
//              work; loss, correct predictions and raw gradient norm are written on the device
//              (experiments/training/step_stats_ring.h) and read, and checked for divergence, only
//              when the trainer logs. On a GPU the device work of a step is captured once per kind
//              (batch size, a method's special step such as NeuralGrok's meta step, evaluation step
//              with AGE metrics or not) as a CUDA graph (engine/captured_graph.h) and replayed;
//              eagerly instead: the first step of each kind (it initialises cuBLAS and the allocator's
//              cache), and every step of a method that is not replayable (grokfast-ma moves its
//              window slot each step). On the CPU every sync-free step runs eagerly. Results are
//              bit-identical to the eager mode on the same device.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "engine/captured_graph.h"
#include "engine/parameters.h"
#include "experiments/training/batch_sampler.h"
#include "experiments/methods/gradient_method.h"
#include "experiments/training/checkpoint.h"
#include "experiments/training/step_stats_ring.h"
#include "experiments/training/tasks.h"
#include "experiments/training/train_config.h"
#include "experiments/training/train_step.h"
#include "models/model.h"
#include "optim/optimizer.h"

namespace tg {

struct EvalStats {
  double loss = 0, accuracy = 0;  // the training loss's mean and the fraction predicted right
  std::int64_t examples = 0;
};

class Trainer {
 public:
  // restoring: the caller will load_checkpoint() next, so weights are not loaded from other files
  // (a GrokTransfer run resumes without its weak model's checkpoint).
  explicit Trainer(TrainConfig config, bool restoring = false);

  // Runs until max_steps or the stop criterion; evaluates, logs, checkpoints. Returns the progress.
  RunProgress run();

  // One optimizer update; with_entropy also measures the raw and transformed gradients' AGE.
  StepStats step(bool with_entropy = false);
  // Sync-free mode: the statistics of every step since the last call, in order (one wait for the
  // device). Throws "training diverged at step N ..." for the first non-finite loss or gradient norm
  // among them. Empty in the normal mode, whose step() returns them.
  std::vector<StepStats> read_step_stats();
  bool sync_free() const { return mode_ == StepMode::sync_free; }
  StepMode mode() const { return mode_; }
  // What --cuda-graph does for this run (which steps replay a graph, which run eagerly); "" without it.
  std::string sync_free_notice() const;
  EvalStats evaluate(const std::vector<std::int64_t>& examples) const;  // no tape, chunks of 4096

  void save_checkpoint(const std::string& path);  // atomic (temp file + rename)
  void load_checkpoint(const std::string& path);  // validates everything before changing anything

  const TrainConfig& config() const { return config_; }
  const Dataset& dataset() const { return data_; }
  const Split& split() const { return split_; }
  const Model& model() const { return *model_; }
  const ParameterTable& params() const { return params_; }
  Optimizer& optimizer() { return *optimizer_; }
  const MethodList& methods() const { return methods_; }
  // The run's method of type M (e.g. NeuralGrok), or null.
  template <class M>
  M* method() const {
    for (const auto& m : methods_) {
      if (auto* found = dynamic_cast<M*>(m.get())) return found;
    }
    return nullptr;
  }
  const RunProgress& progress() const { return progress_; }
  // Called with each evaluation's metrics record once it is logged (a notebook's live plot); an
  // exception it throws stops the run after that record, like any other error.
  void on_evaluation(std::function<void(const nlohmann::json& record)> callback) {
    on_evaluation_ = std::move(callback);
  }
  Device device() const { return device_; }
  std::int64_t eval_interval() const;

 private:
  StepStats step_sync_free(const StepInput& in, const std::vector<std::int64_t>& examples);
  bool replayable() const;
  RunState run_state();
  // Throws naming the first weight or optimizer-state tensor that holds NaN or inf (an update can
  // break them while the loss still looks finite, e.g. an overflowing second moment).
  void check_finite_state() const;

  TrainConfig config_;
  Device device_;
  DType dtype_;
  Dataset data_;
  Split split_;
  std::unique_ptr<Model> model_;
  ParameterTable params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<BatchSampler> sampler_;
  MethodList methods_;     // applied in order to every step's gradient
  StepMode mode_ = StepMode::eager;
  RecordedWindow window_;  // recorded mode: the open window
  RunProgress progress_;
  bool resumed_ = false;   // load_checkpoint ran: run() continues the directory's run
  std::function<void(const nlohmann::json&)> on_evaluation_;

  // ---- sync-free mode ----
  bool use_graphs_ = false;   // sync-free on a CUDA device: capture and replay
  Tensor batch_ids_;          // i32 [batch_size, seq_len]: every step's inputs (a partial batch uses the first rows)
  Tensor batch_targets_;      // i32 [batch_size]
  DeviceSlots slots_;         // the step's statistics, AGE and optimizer scalars on the device
  StepStatsRing stats_;
  struct ShapeGraph {
    std::int64_t eager_steps = 0;  // replayable steps run eagerly so far (the warm-up)
    CapturedGraph graph;
  };
  // By (batch size, special step, evaluation step): the full batch and an epoch's partial last one,
  // each with and without a method's special step and the AGE metrics of an evaluation step.
  std::map<std::tuple<std::int64_t, bool, bool>, ShapeGraph> graphs_;
};

}  // namespace tg

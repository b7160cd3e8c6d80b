// The training loop of `tapegrok train`: one Transformer on one modular-arithmetic task.
//
// One step (Trainer::step), the path a reader can follow through the engine:
//   batch ids [B, S], targets [B]     BatchSampler + gather_examples (experiments/)
//   logits = model.forward(...)       models/transformer.cpp -> engine/ops -> backend kernels
//   loss = cross_entropy(logits, t)   recorded on the tape (engine/tape.h)
//   backward(loss)                    walks the tape, fills the flat gradient buffer
//   gradient transforms               optim/gradient_transforms.h (normalise, clip)
//   optimizer->step(params, lr)       one fused pass over the flat buffers (optim/)
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "engine/parameters.h"
#include "experiments/batch_sampler.h"
#include "experiments/tasks.h"
#include "experiments/train_config.h"
#include "models/transformer.h"
#include "optim/optimizer.h"

namespace tg {

struct StepStats {
  double loss = 0, accuracy = 0, grad_norm = 0, lr = 0;
  std::int64_t examples = 0;
};

struct EvalStats {
  double loss = 0, accuracy = 0;
  std::int64_t examples = 0;
};

// What the run has achieved so far; kept in checkpoints so a resumed run reports the same summary.
struct RunProgress {
  std::int64_t step = 0;                 // optimizer updates taken
  double wall_seconds = 0;               // training time before this process (resume) plus this process
  std::int64_t first_train_95 = -1;      // first evaluated step with train accuracy >= 95% (-1: not yet)
  std::int64_t first_test_95 = -1, first_test_99 = -1;
  double last_test_acc = 0, last_train_acc = 0, last_test_loss = 0, last_train_loss = 0;
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config);

  // Runs until max_steps or the stop criterion; evaluates, logs, checkpoints. Returns the progress.
  RunProgress run();

  StepStats step();                                                    // one optimizer update
  EvalStats evaluate(const std::vector<std::int64_t>& examples) const;  // no tape, chunks of 4096

  void save_checkpoint(const std::string& path) const;  // atomic (temp file + rename)
  void load_checkpoint(const std::string& path);        // validates everything before changing anything

  const TrainConfig& config() const { return config_; }
  const Dataset& dataset() const { return data_; }
  const Split& split() const { return split_; }
  const Model& model() const { return *model_; }
  const ParameterTable& params() const { return params_; }
  Optimizer& optimizer() { return *optimizer_; }
  const RunProgress& progress() const { return progress_; }
  Device device() const { return device_; }
  std::int64_t eval_interval() const;

 private:
  TrainConfig config_;
  Device device_;
  DType dtype_;
  Dataset data_;
  Split split_;
  std::unique_ptr<Model> model_;
  ParameterTable params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<BatchSampler> sampler_;
  RunProgress progress_;
};

// Loads a run's config from a checkpoint's metadata (for `--resume`).
TrainConfig config_from_checkpoint(const std::string& path);

}  // namespace tg

// A run checkpoint: one safetensors file with everything a resumed run needs to continue exactly as
// the uninterrupted run would have (format "tapegrok-run-checkpoint-v1").
//
//   tensors   model parameters (PyTorch state-dict names), "optimizer.<buffer>", "sampler.order",
//             "sampler.rng", and each gradient method's own entries (GradientMethod::checkpoint)
//   metadata  "format", "config" (the run's TrainConfig as JSON), "progress" (RunProgress as JSON),
//             "optimizer", "optimizer.steps", "sampler.cursor", "sampler.epoch", and the methods'
//
// Writes are atomic (temp file + rename). Loading checks every entry against the run first and
// changes nothing unless all of them pass.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/parameters.h"
#include "experiments/methods/gradient_method.h"
#include "experiments/training/batch_sampler.h"
#include "experiments/training/train_config.h"
#include "optim/optimizer.h"

namespace tg {

// What the run has achieved so far; kept in checkpoints so a resumed run reports the same summary.
struct RunProgress {
  std::int64_t step = 0;                 // optimizer updates taken
  double wall_seconds = 0;               // training time before this process (resume) plus this process
  std::int64_t first_train_95 = -1;      // first evaluated step with train accuracy >= 95% (-1: not yet)
  std::int64_t first_test_95 = -1, first_test_99 = -1;
  double last_test_acc = 0, last_train_acc = 0, last_test_loss = 0, last_train_loss = 0;
  // The training statistics summed since the last evaluation (its record averages them).
  double train_loss_sum = 0, train_acc_sum = 0;
  std::int64_t steps_since_eval = 0;
  double last_grad_norm = 0, last_lr = 0;
};

nlohmann::json progress_to_json(const RunProgress& p);

// The parts of a run a checkpoint holds (owned by the Trainer).
struct RunState {
  const TrainConfig& config;
  const ParameterTable& params;
  Optimizer& optimizer;
  BatchSampler& sampler;
  MethodList& methods;
  RunProgress& progress;
};

void save_run_checkpoint(const std::string& path, const RunState& run);
// Checks that the file was written by a run with the same computation-shaping settings and holds
// every tensor this run needs in its shape, then loads it.
void load_run_checkpoint(const std::string& path, const RunState& run);

// A run's config from a checkpoint's metadata (for `--resume`).
TrainConfig config_from_checkpoint(const std::string& path);

// --keep-checkpoints: the checkpoint of step N is also kept as checkpoint_step<N, 7 digits>.safetensors.
std::string kept_checkpoint_name(std::int64_t step);
// Keeps the checkpoint just written at `path` as `kept` too: a hard link (the next checkpoint replaces
// `path` by a rename, so the kept file never changes), or a copy where the file system has no links.
void keep_checkpoint(const std::string& path, const std::string& kept);

}  // namespace tg

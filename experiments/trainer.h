// The training loop of `tapegrok train`: one Transformer on one modular-arithmetic task.
//
// One step (Trainer::step), the path a reader can follow through the engine:
//   batch ids [B, S], targets [B]     BatchSampler + gather_examples (experiments/)
//   logits = model.forward(...)       models/transformer.cpp -> engine/ops -> backend kernels
//   loss = cross_entropy(logits, t)   recorded on the tape (engine/tape.h)
//   backward(loss)                    walks the tape, fills the flat gradient buffer
//   gradient method                   NeuralGrok's amplifier (experiments/neuralgrok.h) or a Grokfast filter
//   gradient transforms               optim/gradient_transforms.h (normalise, clip)
//   optimizer->step(params, lr)       one fused pass over the flat buffers (optim/)
// With --method neuralgrok --meta-grad unrolled the whole inner step is recorded instead
// (NeuralGrok::unrolled_step), so the amplifier's meta-gradient can flow back through it.
//
// Sync-free steps (--cuda-graph, TrainConfig::cuda_graph): the same work, but nothing in a step waits
// for the device. The batch is uploaded into fixed input buffers and the optimizer's per-step values
// (lr, bias corrections) into a small device tensor, both before the device work; loss, correct
// predictions and raw gradient norm are written on the device (experiments/step_stats_ring.h) and
// read, and checked for divergence, only when the trainer logs; a HostReadGuard makes any host read
// inside the step an error, on every device. On a GPU the device work of a step is captured once per
// kind — batch size, NeuralGrok meta step or not, evaluation step (with AGE metrics) or not — as a
// CUDA graph (engine/captured_graph.h) and replayed; eager instead: the first steps of each kind (they
// initialise cuBLAS and the allocator's cache), and every grokfast-ma step (its window slot moves
// each step). --meta-grad unrolled keeps the normal, synchronising step. On the CPU
// every sync-free step runs eagerly. Results are bit-identical to the normal mode on the same device.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "engine/captured_graph.h"
#include "engine/parameters.h"
#include "experiments/batch_sampler.h"
#include "experiments/neuralgrok.h"
#include "optim/entropy_metrics.h"
#include "optim/grokfast.h"
#include "experiments/step_stats_ring.h"
#include "experiments/tasks.h"
#include "experiments/train_config.h"
#include "models/transformer.h"
#include "optim/optimizer.h"

namespace tg {

struct StepStats {
  double loss = 0, accuracy = 0, grad_norm = 0, lr = 0;
  std::int64_t examples = 0;
  // Gradient entropies (AGE), computed on steps that end in an evaluation; empty otherwise.
  EntropyStats age_raw, age_transformed;
  // A sync-free step: loss, accuracy and grad_norm are still on the device (NaN here) until
  // Trainer::read_step_stats().
  bool on_device = false;
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
  bool sync_free() const { return sync_free_; }
  // What --cuda-graph does for this run (which steps replay a graph, which run eagerly); "" without it.
  std::string sync_free_notice() const;
  EvalStats evaluate(const std::vector<std::int64_t>& examples) const;  // no tape, chunks of 4096

  void save_checkpoint(const std::string& path) const;  // atomic (temp file + rename)
  void load_checkpoint(const std::string& path);        // validates everything before changing anything

  const TrainConfig& config() const { return config_; }
  const Dataset& dataset() const { return data_; }
  const Split& split() const { return split_; }
  const Model& model() const { return *model_; }
  const ParameterTable& params() const { return params_; }
  Optimizer& optimizer() { return *optimizer_; }
  NeuralGrok* neuralgrok() { return neuralgrok_.get(); }  // null unless --method neuralgrok
  const RunProgress& progress() const { return progress_; }
  Device device() const { return device_; }
  std::int64_t eval_interval() const;

 private:
  StepStats step_sync_free(bool with_entropy);
  // The device work of a sync-free step on the first `batch` rows of the input buffers: forward,
  // backward, statistics into stats_.slot(), gradient method, transforms, optimizer update. On a GPU
  // this is what a CUDA graph captures. Runs under a HostReadGuard: it never reads a value on the host
  // (with_entropy, the AGE metrics go to age_*_slot_, read after the step).
  void device_step(std::int64_t batch, bool with_entropy, bool meta_step);
  bool replayable() const;

  TrainConfig config_;
  Device device_;
  DType dtype_;
  Dataset data_;
  Split split_;
  std::unique_ptr<Model> model_;
  ParameterTable params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<BatchSampler> sampler_;
  std::unique_ptr<NeuralGrok> neuralgrok_;
  std::unique_ptr<GradientFilter> filter_;  // Grokfast EMA / MA, when chosen
  Tensor outer_ids_, outer_targets_;  // the whole outer set, on the device (NeuralGrok's meta loss)
  RunProgress progress_;

  // ---- sync-free mode ----
  bool sync_free_ = false;    // config_.cuda_graph, unless the method needs the synchronising step
  bool use_graphs_ = false;   // sync-free on a CUDA device: capture and replay
  Tensor batch_ids_;          // i32 [batch_size, seq_len]: every step's inputs (a partial batch uses the first rows)
  Tensor batch_targets_;      // i32 [batch_size]
  Tensor step_scalars_;       // the optimizer's per-step values (Optimizer::device_scalars), uploaded each step
  StepStatsRing stats_;
  struct ShapeGraph {
    std::int64_t eager_steps = 0;  // replayable steps run eagerly so far (the warm-up)
    CapturedGraph graph;
  };
  Tensor age_raw_slot_, age_transformed_slot_;  // an evaluation step's AGE, read after the step
  // By (batch size, meta step, evaluation step): the full batch and an epoch's partial last one, each
  // with and without NeuralGrok's meta step and the AGE metrics of an evaluation step.
  std::map<std::tuple<std::int64_t, bool, bool>, ShapeGraph> graphs_;
};

// Loads a run's config from a checkpoint's metadata (for `--resume`).
TrainConfig config_from_checkpoint(const std::string& path);

}  // namespace tg

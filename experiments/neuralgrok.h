// NeuralGrok's bilevel training (papers.md, section 1): the amplifier G_phi rewrites every inner
// gradient, and every T inner steps phi takes one Adam step on the loss of the held-out outer set.
//
// Two meta-gradients:
//   lookahead  exactly the official code: with the current batch's gradient g held constant,
//              theta' = theta - lr * G_phi(g) (one plain SGD look-ahead), L_outer(theta'), d/dphi.
//   unrolled   the exact hypergradient of L_outer through the last T real inner steps: each inner
//              step of the window is recorded with its backward (create_graph), the amplifier and a
//              differentiable optimizer update, so d/dphi flows through every gradient's dependence
//              on theta (Hessian-vector products by tape replay) and through the optimizer's moments.
//              The window's tape is freed after its meta step (truncated backpropagation).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "engine/parameters.h"
#include "experiments/train_config.h"
#include "models/model.h"
#include "optim/amplifier.h"
#include "optim/differentiable_step.h"
#include "optim/entropy_metrics.h"
#include "optim/optimizer.h"

namespace tg {

struct InnerStepStats {
  double loss = 0, accuracy = 0, grad_norm = 0;  // grad_norm: of the raw gradient
  std::int64_t examples = 0;
  EntropyStats age_raw, age_transformed;        // when asked for
};

class NeuralGrok {
 public:
  NeuralGrok(const TrainConfig& config, const ParameterTable& model_params, Rng& rng);

  const Amplifier& amplifier() const { return *amplifier_; }
  const ParameterTable& amp_params() const { return amp_params_; }
  Optimizer& amp_optimizer() { return *amp_optimizer_; }
  bool updates_amplifier() const { return !config_.amp_frozen; }
  std::int64_t meta_steps() const { return meta_steps_; }
  // L_outer of the last meta step. It stays on the device until asked for: reading it waits for the
  // device, so the sync-free step never does; check_outer_loss() throws when it is not finite.
  double last_outer_loss() const;
  void check_outer_loss() const;

  // ---- lookahead mode (and frozen amplifiers): the trainer runs a normal step and calls these ----
  // g' = G_phi(g) for the model's flat gradient buffer, in place, not recorded.
  void transform(const ParameterTable& params) const;
  // One amplifier update from the current (raw) flat gradient and the outer set. Reads nothing on the
  // host: L_outer stays on the device (last_outer_loss), and the amplifier's Adam takes its step's
  // values from a device tensor uploaded by prepare_meta_step() — call that first, outside any CUDA
  // graph capture, so that one captured meta step serves every later one.
  void prepare_meta_step();
  void meta_step_lookahead(const Model& model, const ParameterTable& params, const Tensor& outer_ids,
                           const Tensor& outer_targets, double lookahead_lr);
  // The host half of a meta step whose device work a graph replay did (its counters).
  void count_replayed_meta_step();

  // ---- unrolled mode: the whole inner step runs here, recorded on the tape ----
  // One inner step of the current window (starting a window if none is open): loss, recorded gradient,
  // amplifier, optional clipping, differentiable optimizer update. The model's parameters and the
  // optimizer's state are written back after every step, so evaluation and checkpoints see them.
  // After the window's T-th step, the amplifier takes its meta step and the window's tape is freed.
  InnerStepStats unrolled_step(const Model& model, const ParameterTable& params, Optimizer& optimizer,
                               const Tensor& ids, const Tensor& targets, double lr, const Tensor& outer_ids,
                               const Tensor& outer_targets, bool with_entropy = false);

  // Amplifier files (safetensors: amp.mlp.* plus hidden sizes and c in the metadata).
  void save_amplifier(const std::string& path) const;
  void load_amplifier(const std::string& path);  // checks the architecture matches

  // Checkpoint entries: amplifier parameters and its optimizer's state.
  std::vector<std::pair<std::string, Tensor>> checkpoint_tensors() const;
  std::map<std::string, std::string> checkpoint_metadata() const;
  void load_checkpoint(const std::map<std::string, Tensor>& tensors, const std::map<std::string, std::string>& metadata,
                       const std::string& path);

 private:
  // L_outer at theta, its gradient into the amplifier's .grad, and the amplifier's Adam step (from
  // host scalars, or with device_scalars from amp_step_scalars_).
  void outer_loss_and_meta_step(const Model& model, const TensorList& theta, const Tensor& outer_ids,
                                const Tensor& outer_targets, bool device_scalars);
  void check_outer_loss_of(std::int64_t meta_step) const;

  TrainConfig config_;
  std::unique_ptr<Amplifier> amplifier_;
  ParameterTable amp_params_;
  std::unique_ptr<Optimizer> amp_optimizer_;
  std::vector<Segment> segments_;  // the model's parameters in its flat buffers
  std::int64_t meta_steps_ = 0;
  // [] on the device, 0 until a meta step writes it. One buffer for the whole run, allocated by the
  // constructor (outside any graph capture), that every meta step copies L_outer into: a tensor assigned inside a captured step would live in that graph's
  // pool, and with several meta-step graphs (full and partial batches, evaluation steps) it would
  // point at whichever graph was captured last.
  Tensor last_outer_loss_;
  Tensor amp_step_scalars_;   // the amplifier Adam's per-step values (Optimizer::device_scalars)

  // The open unrolled window.
  struct Window {
    bool open = false;
    std::int64_t steps = 0;
    TensorList theta;       // recorded parameters after the window's steps so far
    AdamMoments moments;    // recorded Adam moments
  } window_;
};

}  // namespace tg

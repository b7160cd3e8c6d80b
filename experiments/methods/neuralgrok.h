// NeuralGrok's bilevel training (docs/methods.md): the amplifier G_phi rewrites every inner
// gradient, and every T inner steps phi takes one Adam step on the loss of the held-out outer set.
//
// Two meta-gradients:
//   lookahead  exactly the official code: with the current batch's gradient g held constant,
//              theta' = theta - lr * G_phi(g) (one plain SGD look-ahead), L_outer(theta'), d/dphi.
//   unrolled   the exact hypergradient of L_outer through the last T real inner steps: the trainer
//              records each inner step of the window (experiments/training/train_step.h, mode
//              recorded) with its backward (create_graph), the amplifier and a differentiable
//              optimizer update, so d/dphi flows through every gradient's dependence on theta
//              (Hessian-vector products by tape replay) and through the optimizer's moments. The
//              window's tape is freed after its meta step (truncated backpropagation).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "engine/parameters.h"
#include "experiments/methods/gradient_method.h"
#include "experiments/training/train_config.h"
#include "models/model.h"
#include "optim/amplifier.h"
#include "optim/optimizer.h"

namespace tg {

class NeuralGrok final : public GradientMethod {
 public:
  // outer_ids [n, S], outer_targets [n]: the held-out outer set D_outer on the run's device.
  NeuralGrok(const TrainConfig& config, const ParameterTable& model_params, Rng& rng, Tensor outer_ids,
             Tensor outer_targets);
  const char* name() const override { return "neuralgrok"; }

  const Amplifier& amplifier() const { return *amplifier_; }
  const ParameterTable& amp_params() const { return amp_params_; }
  Optimizer& amp_optimizer() { return *amp_optimizer_; }
  bool updates_amplifier() const { return !config_.amp_frozen; }
  std::int64_t meta_steps() const { return meta_steps_; }
  // L_outer of the last meta step. It stays on the device until asked for: reading it waits for the
  // device, so the sync-free step never does; check_outer_loss() throws when it is not finite.
  double last_outer_loss() const;
  void check_outer_loss() const;

  // ---- lookahead mode (and frozen amplifiers)
  // Every T-th step is a meta step: the amplifier first learns from this step's raw gradient
  // (lookahead), then rewrites the gradient with its updated parameters.
  bool special_step(const StepContext& step) const override;
  // A meta step's amplifier Adam takes its step's values from a device tensor uploaded here, outside
  // any CUDA graph capture, so that one captured meta step serves every later one.
  void prepare(const StepContext& step) override;
  // g' = G_phi(g) for the model's flat gradient buffer, in place, not recorded (after the meta step
  // when one is due). Reads nothing on the host when step.sync_free.
  void transform(const ParameterTable& params, const StepContext& step) override;
  void count_replayed_step(const StepContext& step) override;
  void check_deferred() const override { check_outer_loss(); }
  // One amplifier update from the current (raw) flat gradient and the outer set, without host reads:
  // L_outer stays on the device (last_outer_loss). Needs prepare() first.
  void meta_step_lookahead(const Model& model, const ParameterTable& params, double lookahead_lr);

  // ---- unrolled mode: the trainer records whole inner steps (StepMode::recorded) and calls these
  bool records_steps() const override { return config_.meta_grad == "unrolled" && updates_amplifier(); }
  bool has_recorded_form() const override { return true; }
  Tensor transform_recorded(const Tensor& flat_g, const std::vector<Segment>& segments) override;
  // After the window's T-th recorded step, the meta step: d L_outer(theta_T) / d phi through the window.
  bool end_recorded_step(const Model& model, const TensorList& theta, std::int64_t window_steps) override;

  // Amplifier files (safetensors: amp.mlp.* plus hidden sizes and c in the metadata).
  void save_amplifier(const std::string& path) const;
  void load_amplifier(const std::string& path);  // checks the architecture matches

  // Checkpoint entries: amplifier parameters, its optimizer's state and the meta-step count.
  MethodCheckpoint checkpoint() const override;
  std::function<void()> restore(const SafetensorsFile& file, const std::string& path) override;
  void log(nlohmann::json& record) const override;                 // meta_steps, meta_outer_loss
  void finish(const std::string& run_dir) const override;          // RUN/amplifier.safetensors

 private:
  // L_outer at theta, its gradient into the amplifier's .grad, and the amplifier's Adam step (from
  // host scalars, or with device_scalars from amp_step_scalars_).
  void outer_loss_and_meta_step(const Model& model, const TensorList& theta, bool device_scalars);
  void check_outer_loss_of(std::int64_t meta_step) const;

  TrainConfig config_;
  std::unique_ptr<Amplifier> amplifier_;
  ParameterTable amp_params_;
  std::unique_ptr<Optimizer> amp_optimizer_;
  std::vector<Segment> segments_;  // the model's parameters in its flat buffers
  Tensor outer_ids_, outer_targets_;
  std::int64_t meta_steps_ = 0;
  // [] on the device, 0 until a meta step writes it. One buffer for the whole run, allocated by the
  // constructor (outside any graph capture), that every meta step copies L_outer into: a tensor
  // assigned inside a captured step would live in that graph's pool, and with several meta-step
  // graphs (full and partial batches, evaluation steps) it would point at whichever graph was
  // captured last.
  Tensor last_outer_loss_;
  Tensor amp_step_scalars_;   // the amplifier Adam's per-step values (Optimizer::device_scalars)
};

}  // namespace tg

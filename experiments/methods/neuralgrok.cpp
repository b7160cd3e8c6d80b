#include "experiments/methods/neuralgrok.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "experiments/methods/method_factory.h"

namespace tg {

namespace {

constexpr const char* kAmplifierFormat = "tapegrok-amplifier-v1";

// Per-parameter tensors viewing a flat buffer laid out like `params` (recorded: differentiable).
TensorList split_flat(const Tensor& flat, const ParameterTable& params, const std::vector<Segment>& segments) {
  TensorList out;
  for (std::size_t i = 0; i < params.size(); ++i) {
    out.push_back(reshape(slice(flat, 0, segments[i].begin, segments[i].size), params[i].shape()));
  }
  return out;
}

}  // namespace

NeuralGrok::NeuralGrok(const TrainConfig& config, const ParameterTable& model_params, Rng& rng, Tensor outer_ids,
                       Tensor outer_targets)
    : config_(config), outer_ids_(std::move(outer_ids)), outer_targets_(std::move(outer_targets)) {
  amplifier_ = std::make_unique<Amplifier>(AmplifierConfig{parse_hidden_sizes(config.amp_hidden), config.amp_c});
  amp_params_ = ParameterTable(amplifier_->parameter_specs(), model_params.dtype(), model_params.device());
  amplifier_->initialize(amp_params_, rng);
  if (!config.amp_from.empty()) load_amplifier(config.amp_from);
  // The official code: torch.optim.Adam(lr 1e-4, betas (0.9, 0.98), weight_decay 1e-3) on phi.
  amp_optimizer_ = make_adam(amp_params_, {0.9, 0.98, 1e-8, config.amp_weight_decay, false});
  segments_ = parameter_segments(model_params);
  last_outer_loss_ = Tensor::zeros({}, amp_params_.dtype(), amp_params_.device());
  TG_CHECK(config.meta_grad != "unrolled" || config.optimizer != "sgd" || config.momentum == 0.0,
           "--meta-grad unrolled supports adam, adamw and plain SGD (momentum 0); got sgd with momentum {}",
           config.momentum);
}

// ---------------------------------------------------------------- lookahead

bool NeuralGrok::special_step(const StepContext& step) const {
  return updates_amplifier() && !records_steps() && step.step % config_.meta_every == 0;
}

void NeuralGrok::prepare(const StepContext& step) {
  if (!special_step(step)) return;
  if (!amp_step_scalars_.defined()) {
    const auto count = static_cast<std::int64_t>(amp_optimizer_->device_scalars(config_.amp_lr).size());
    amp_step_scalars_ = Tensor::zeros({count}, amp_params_.dtype(), amp_params_.device());
  }
  amp_optimizer_->upload_device_scalars(config_.amp_lr, amp_step_scalars_);
}

void NeuralGrok::transform(const ParameterTable& params, const StepContext& step) {
  if (special_step(step)) {
    TG_CHECK(step.model != nullptr, "NeuralGrok meta step {}: the step gave no model", meta_steps_ + 1);
    std::optional<IdsCheckedGuard> checked;  // a sync-free run checked its whole dataset, the outer set too
    if (step.sync_free) checked.emplace();
    meta_step_lookahead(*step.model, params, config_.lr);
    if (!step.sync_free) check_outer_loss();
  }
  NoGradGuard no_grad;
  const Tensor amplified = amplifier_->apply(amp_params_.values(), params.flat_grads(), segments_);
  Tensor grads = params.flat_grads();
  grads.copy_from_(amplified);
}

void NeuralGrok::count_replayed_step(const StepContext& step) {
  if (!special_step(step)) return;
  amp_optimizer_->count_replayed_step();
  ++meta_steps_;
}

void NeuralGrok::meta_step_lookahead(const Model& model, const ParameterTable& params, double lookahead_lr) {
  TG_CHECK(amp_step_scalars_.defined(), "NeuralGrok meta step {}: prepare() was not called", meta_steps_ + 1);
  tape().clear();
  // theta' = theta - lr * G_phi(g), with theta and g constants: only phi is differentiated.
  const Tensor g = params.flat_grads().clone();
  const Tensor amplified = amplifier_->apply(amp_params_.values(), g, segments_);
  const Tensor theta_flat = sub(params.flat_values(), scale(amplified, lookahead_lr));
  outer_loss_and_meta_step(model, split_flat(theta_flat, params, segments_), true);
}

double NeuralGrok::last_outer_loss() const { return last_outer_loss_.item(); }

void NeuralGrok::check_outer_loss() const { check_outer_loss_of(meta_steps_); }

void NeuralGrok::check_outer_loss_of(std::int64_t meta_step) const {
  const double loss = last_outer_loss_.item();
  TG_CHECK(std::isfinite(loss), "NeuralGrok meta step {}: the outer loss is {}", meta_step, loss);
}

void NeuralGrok::outer_loss_and_meta_step(const Model& model, const TensorList& theta, bool device_scalars) {
  const Tensor loss = cross_entropy(model.forward(theta, outer_ids_), outer_targets_);
  last_outer_loss_.copy_from_(loss.detach());
  if (!device_scalars) check_outer_loss_of(meta_steps_ + 1);  // a synchronising path: refuse before phi moves
  const TensorList grads = grad({loss}, amp_params_.values());
  tape().clear();
  for (std::size_t i = 0; i < grads.size(); ++i) {
    Tensor slot = amp_params_[i].grad();
    slot.copy_from_(grads[i]);
  }
  if (device_scalars) {
    amp_optimizer_->step_from_device(amp_params_, amp_step_scalars_, GradClip{});
  } else {
    amp_optimizer_->step(amp_params_, config_.amp_lr);
  }
  ++meta_steps_;
}

// ---------------------------------------------------------------- unrolled

Tensor NeuralGrok::transform_recorded(const Tensor& flat_g, const std::vector<Segment>& segments) {
  return amplifier_->apply(amp_params_.values(), flat_g, segments);
}

bool NeuralGrok::end_recorded_step(const Model& model, const TensorList& theta, std::int64_t window_steps) {
  if (window_steps < config_.meta_every) return false;
  outer_loss_and_meta_step(model, theta, false);
  return true;
}

// ---------------------------------------------------------------- files and checkpoints

void NeuralGrok::save_amplifier(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < amp_params_.size(); ++i) tensors.emplace_back(amp_params_.name(i), amp_params_[i]);
  save_safetensors(path, tensors,
                   {{"format", kAmplifierFormat}, {"hidden", config_.amp_hidden}, {"c", fmt::format("{}", config_.amp_c)}});
}

void NeuralGrok::load_amplifier(const std::string& path) {
  const SafetensorsFile file = load_safetensors(path);
  auto format = file.metadata.find("format");
  TG_CHECK(format != file.metadata.end() && format->second == kAmplifierFormat,
           "amplifier file {}: not a tapegrok amplifier (metadata 'format' is missing or different)", path);
  for (std::size_t i = 0; i < amp_params_.size(); ++i) {
    expect_tensor(file, amp_params_.name(i), amp_params_.dtype(), amp_params_[i].shape());
  }
  for (std::size_t i = 0; i < amp_params_.size(); ++i) {
    Tensor p = amp_params_[i];
    p.copy_from_(file.at(amp_params_.name(i)));
  }
}

MethodCheckpoint NeuralGrok::checkpoint() const {
  MethodCheckpoint out;
  for (std::size_t i = 0; i < amp_params_.size(); ++i) out.tensors.emplace_back(amp_params_.name(i), amp_params_[i]);
  for (const auto& [key, buffer] : amp_optimizer_->state()) out.tensors.emplace_back("amp_optimizer." + key, buffer);
  out.metadata = {{"amp_optimizer.steps", std::to_string(amp_optimizer_->steps_taken())},
                  {"amp.meta_steps", std::to_string(meta_steps_)},
                  {"amp.hidden", config_.amp_hidden}};
  return out;
}

std::function<void()> NeuralGrok::restore(const SafetensorsFile& file, const std::string& path) {
  auto meta = [&](const std::string& key) {
    auto it = file.metadata.find(key);
    TG_CHECK(it != file.metadata.end(), "checkpoint {}: metadata entry '{}' is missing (not a NeuralGrok run?)", path,
             key);
    return it->second;
  };
  TG_CHECK(meta("amp.hidden") == config_.amp_hidden,
           "checkpoint {}: its amplifier has hidden sizes {} but this run uses {}", path, meta("amp.hidden"),
           config_.amp_hidden);
  auto tensor = [&](const std::string& name, const Tensor& like) -> const Tensor& {
    auto it = file.tensors.find(name);
    TG_CHECK(it != file.tensors.end(), "checkpoint {}: tensor '{}' is missing", path, name);
    TG_CHECK(it->second.shape() == like.shape() && it->second.dtype() == like.dtype(),
             "checkpoint {}: tensor '{}' is {} but the run needs {}", path, name, it->second.str(), like.str());
    return it->second;
  };
  std::map<std::string, Tensor> state;
  for (const auto& [key, buffer] : amp_optimizer_->state()) state[key] = tensor("amp_optimizer." + key, buffer);
  std::vector<Tensor> weights;
  for (std::size_t i = 0; i < amp_params_.size(); ++i) weights.push_back(tensor(amp_params_.name(i), amp_params_[i]));
  const std::int64_t amp_steps = file.metadata_integer("amp_optimizer.steps");
  const std::int64_t meta_steps = file.metadata_integer("amp.meta_steps");
  return [this, state, weights, amp_steps, meta_steps] {
    amp_optimizer_->load_state(state, amp_steps);
    for (std::size_t i = 0; i < amp_params_.size(); ++i) {
      Tensor p = amp_params_[i];
      p.copy_from_(weights[i]);
    }
    meta_steps_ = meta_steps;
  };
}

void NeuralGrok::log(nlohmann::json& record) const {
  record["meta_steps"] = meta_steps_;
  record["meta_outer_loss"] = last_outer_loss();
}

void NeuralGrok::finish(const std::string& run_dir) const { save_amplifier(run_dir + "/amplifier.safetensors"); }

// --method neuralgrok: the outer set goes to the device once, for every meta step.
std::unique_ptr<GradientMethod> make_neuralgrok(const MethodSetup& setup) {
  Tensor outer_ids, outer_targets;
  gather_examples(setup.data, setup.split.outer, setup.params.device(), outer_ids, outer_targets);
  return std::make_unique<NeuralGrok>(setup.config, setup.params, setup.rng, outer_ids, outer_targets);
}

}  // namespace tg

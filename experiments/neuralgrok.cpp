#include "experiments/neuralgrok.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"

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

std::int64_t count_correct(const Tensor& logits, const Tensor& targets) {
  const auto predicted = argmax(logits).to_vector<std::int32_t>();
  const auto wanted = targets.to_vector<std::int32_t>();
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < wanted.size(); ++i) correct += predicted[i] == wanted[i];
  return correct;
}

}  // namespace

NeuralGrok::NeuralGrok(const TrainConfig& config, const ParameterTable& model_params, Rng& rng) : config_(config) {
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

void NeuralGrok::transform(const ParameterTable& params) const {
  NoGradGuard no_grad;
  const Tensor amplified = amplifier_->apply(amp_params_.values(), params.flat_grads(), segments_);
  Tensor grads = params.flat_grads();
  grads.copy_from_(amplified);
}

void NeuralGrok::prepare_meta_step() {
  if (!amp_step_scalars_.defined()) {
    const auto count = static_cast<std::int64_t>(amp_optimizer_->device_scalars(config_.amp_lr).size());
    amp_step_scalars_ = Tensor::zeros({count}, amp_params_.dtype(), amp_params_.device());
  }
  amp_optimizer_->upload_device_scalars(config_.amp_lr, amp_step_scalars_);
}

void NeuralGrok::meta_step_lookahead(const Model& model, const ParameterTable& params, const Tensor& outer_ids,
                                     const Tensor& outer_targets, double lookahead_lr) {
  TG_CHECK(amp_step_scalars_.defined(), "NeuralGrok meta step {}: prepare_meta_step() was not called",
           meta_steps_ + 1);
  tape().clear();
  // theta' = theta - lr * G_phi(g), with theta and g constants: only phi is differentiated.
  const Tensor g = params.flat_grads().clone();
  const Tensor amplified = amplifier_->apply(amp_params_.values(), g, segments_);
  const Tensor theta_flat = sub(params.flat_values(), scale(amplified, lookahead_lr));
  outer_loss_and_meta_step(model, split_flat(theta_flat, params, segments_), outer_ids, outer_targets, true);
}

void NeuralGrok::count_replayed_meta_step() {
  amp_optimizer_->count_replayed_step();
  ++meta_steps_;
}

double NeuralGrok::last_outer_loss() const { return last_outer_loss_.item(); }

void NeuralGrok::check_outer_loss() const { check_outer_loss_of(meta_steps_); }

void NeuralGrok::check_outer_loss_of(std::int64_t meta_step) const {
  const double loss = last_outer_loss_.item();
  TG_CHECK(std::isfinite(loss), "NeuralGrok meta step {}: the outer loss is {}", meta_step, loss);
}

void NeuralGrok::outer_loss_and_meta_step(const Model& model, const TensorList& theta, const Tensor& outer_ids,
                                          const Tensor& outer_targets, bool device_scalars) {
  const Tensor loss = cross_entropy(model.forward(theta, outer_ids), outer_targets);
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

InnerStepStats NeuralGrok::unrolled_step(const Model& model, const ParameterTable& params, Optimizer& optimizer,
                                         const Tensor& ids, const Tensor& targets, double lr, const Tensor& outer_ids,
                                         const Tensor& outer_targets, bool with_entropy) {
  const bool adam = config_.optimizer != "sgd";
  if (!window_.open) {
    // A new window starts from the current parameters and optimizer state, as constants: the
    // hypergradient is truncated at the window's start.
    tape().clear();
    window_.theta.clear();
    for (std::size_t i = 0; i < params.size(); ++i) window_.theta.push_back(params[i].detach().clone().set_requires_grad(true));
    if (adam) {
      const auto state = optimizer.state();
      window_.moments = AdamMoments{};
      for (std::size_t i = 0; i < params.size(); ++i) {
        window_.moments.m.push_back(params.segment(state.at("exp_avg"), i).clone());
        window_.moments.v.push_back(params.segment(state.at("exp_avg_sq"), i).clone());
      }
      window_.moments.steps = optimizer.steps_taken();
    }
    window_.steps = 0;
    window_.open = true;
  }

  InnerStepStats s;
  const Tensor logits = model.forward(window_.theta, ids);
  const Tensor loss = cross_entropy(logits, targets);
  s.examples = ids.size(0);
  s.loss = loss.item();
  TG_CHECK(std::isfinite(s.loss), "training diverged: the loss is {} in an unrolled NeuralGrok step", s.loss);
  s.accuracy = static_cast<double>(count_correct(logits, targets)) / static_cast<double>(s.examples);

  // The inner gradient, recorded: its dependence on theta is what the hypergradient differentiates.
  const TensorList g = grad({loss}, window_.theta, {}, {.create_graph = true});
  TensorList flat_pieces;
  std::vector<Segment> contiguous;
  std::int64_t at = 0;
  for (const Tensor& gi : g) {
    flat_pieces.push_back(reshape(gi, {gi.numel()}));
    contiguous.push_back({at, gi.numel()});
    at += gi.numel();
  }
  const Tensor flat_g = concat(flat_pieces, 0);
  {
    NoGradGuard no_grad;
    s.grad_norm = l2_norm(flat_g).item();
  }
  Tensor amplified = amplifier_->apply(amp_params_.values(), flat_g, contiguous);
  if (config_.clip_grad_norm > 0) {
    // clip_grad_norm_: scale by max / (norm + 1e-6) when that is below 1 (differentiable through the norm).
    const Tensor norm = l2_norm(amplified);
    if (config_.clip_grad_norm / (norm.item() + 1e-6) < 1.0) {
      const Tensor limit = Tensor::full({}, config_.clip_grad_norm, norm.dtype(), norm.device());
      amplified = mul(amplified, div(limit, add_scalar(norm, 1e-6)));
    }
  }
  if (with_entropy) {
    NoGradGuard no_grad;
    s.age_raw = abs_entropy(flat_g, contiguous);
    s.age_transformed = abs_entropy(amplified, contiguous);
    for (std::size_t i = 0; i < params.size(); ++i) {
      s.age_raw.names.push_back(params.name(i));
      s.age_transformed.names.push_back(params.name(i));
    }
  }
  TensorList step_grads;
  for (std::size_t i = 0; i < g.size(); ++i) {
    step_grads.push_back(reshape(slice(amplified, 0, contiguous[i].begin, contiguous[i].size), g[i].shape()));
  }
  const AdamConfig adam_config{config_.beta1, config_.beta2, config_.eps, config_.weight_decay,
                               config_.optimizer == "adamw"};
  if (adam) {
    window_.theta = adam_update(window_.theta, step_grads, window_.moments, adam_config, lr);
  } else {
    if (config_.weight_decay != 0.0) {
      for (std::size_t i = 0; i < step_grads.size(); ++i) {
        step_grads[i] = add(step_grads[i], scale(window_.theta[i], config_.weight_decay));
      }
    }
    window_.theta = sgd_update(window_.theta, step_grads, lr);
  }
  ++window_.steps;

  // Write the step's result back to the real parameters and optimizer state.
  {
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      Tensor p = params[i];
      p.copy_from_(window_.theta[i]);
    }
    if (adam) {
      std::map<std::string, Tensor> state = {{"exp_avg", params.zeros_like_flat()},
                                             {"exp_avg_sq", params.zeros_like_flat()}};
      for (std::size_t i = 0; i < params.size(); ++i) {
        params.segment(state["exp_avg"], i).copy_from_(window_.moments.m[i]);
        params.segment(state["exp_avg_sq"], i).copy_from_(window_.moments.v[i]);
      }
      optimizer.load_state(state, window_.moments.steps);
    } else {
      optimizer.load_state({}, optimizer.steps_taken() + 1);
    }
  }

  if (window_.steps == config_.meta_every) {
    outer_loss_and_meta_step(model, window_.theta, outer_ids, outer_targets, false);
    tape().clear();
    window_ = Window{};
  }
  return s;
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

std::vector<std::pair<std::string, Tensor>> NeuralGrok::checkpoint_tensors() const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < amp_params_.size(); ++i) tensors.emplace_back(amp_params_.name(i), amp_params_[i]);
  for (const auto& [key, buffer] : amp_optimizer_->state()) tensors.emplace_back("amp_optimizer." + key, buffer);
  return tensors;
}

std::map<std::string, std::string> NeuralGrok::checkpoint_metadata() const {
  return {{"amp_optimizer.steps", std::to_string(amp_optimizer_->steps_taken())},
          {"amp.meta_steps", std::to_string(meta_steps_)},
          {"amp.hidden", config_.amp_hidden}};
}

void NeuralGrok::load_checkpoint(const std::map<std::string, Tensor>& tensors,
                                 const std::map<std::string, std::string>& metadata, const std::string& path) {
  auto meta = [&](const std::string& key) {
    auto it = metadata.find(key);
    TG_CHECK(it != metadata.end(), "checkpoint {}: metadata entry '{}' is missing (not a NeuralGrok run?)", path, key);
    return it->second;
  };
  TG_CHECK(meta("amp.hidden") == config_.amp_hidden,
           "checkpoint {}: its amplifier has hidden sizes {} but this run uses {}", path, meta("amp.hidden"),
           config_.amp_hidden);
  auto tensor = [&](const std::string& name, const Tensor& like) -> const Tensor& {
    auto it = tensors.find(name);
    TG_CHECK(it != tensors.end(), "checkpoint {}: tensor '{}' is missing", path, name);
    TG_CHECK(it->second.shape() == like.shape() && it->second.dtype() == like.dtype(),
             "checkpoint {}: tensor '{}' is {} but the run needs {}", path, name, it->second.str(), like.str());
    return it->second;
  };
  std::map<std::string, Tensor> state;
  for (const auto& [key, buffer] : amp_optimizer_->state()) state[key] = tensor("amp_optimizer." + key, buffer);
  for (std::size_t i = 0; i < amp_params_.size(); ++i) (void)tensor(amp_params_.name(i), amp_params_[i]);
  std::int64_t amp_steps = 0, meta_steps = 0;
  try {
    amp_steps = std::stoll(meta("amp_optimizer.steps"));
    meta_steps = std::stoll(meta("amp.meta_steps"));
  } catch (const std::logic_error&) {
    throw Error(fmt::format("checkpoint {}: an amplifier counter in the metadata is not an integer", path));
  }
  amp_optimizer_->load_state(state, amp_steps);
  for (std::size_t i = 0; i < amp_params_.size(); ++i) {
    Tensor p = amp_params_[i];
    p.copy_from_(tensors.at(amp_params_.name(i)));
  }
  meta_steps_ = meta_steps;
  window_ = Window{};
}

}  // namespace tg

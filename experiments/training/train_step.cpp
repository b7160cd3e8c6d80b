#include "experiments/training/train_step.h"

#include <cmath>
#include <limits>
#include <optional>

#include "engine/error.h"
#include "engine/ops.h"
#include "experiments/training/step_stats_ring.h"
#include "optim/gradient_transforms.h"

namespace tg {

namespace {

void check_finite(const char* what, double value, std::int64_t step, const StepParts& parts, double loss) {
  TG_CHECK(std::isfinite(value), "training diverged at step {}: the {} is {} (loss {}, lr {}, task {}); lower the "
           "learning rate or enable --clip-grad-norm", step, what, value, loss, parts.config.lr, parts.config.task);
}

// The window's start: the current parameters and optimizer state, as constants (the hypergradient is
// truncated there).
void open_window(const StepParts& parts, RecordedWindow& window) {
  tape().clear();
  window.theta.clear();
  const ParameterTable& params = parts.params;
  for (std::size_t i = 0; i < params.size(); ++i) {
    window.theta.push_back(params[i].detach().clone().set_requires_grad(true));
  }
  window.moments = AdamMoments{};
  if (parts.config.optimizer != "sgd") {
    const auto state = parts.optimizer.state();
    for (std::size_t i = 0; i < params.size(); ++i) {
      window.moments.m.push_back(params.segment(state.at("exp_avg"), i).clone());
      window.moments.v.push_back(params.segment(state.at("exp_avg_sq"), i).clone());
    }
    window.moments.steps = parts.optimizer.steps_taken();
  }
  window.steps = 0;
  window.open = true;
}

// The recorded step's result into the real parameters and optimizer state, so evaluation and
// checkpoints see it.
void write_back(const StepParts& parts, const RecordedWindow& window) {
  NoGradGuard no_grad;
  const ParameterTable& params = parts.params;
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    p.copy_from_(window.theta[i]);
  }
  if (parts.config.optimizer == "sgd") {
    parts.optimizer.load_state({}, parts.optimizer.steps_taken() + 1);
    return;
  }
  std::map<std::string, Tensor> state = {{"exp_avg", params.zeros_like_flat()}, {"exp_avg_sq", params.zeros_like_flat()}};
  for (std::size_t i = 0; i < params.size(); ++i) {
    params.segment(state["exp_avg"], i).copy_from_(window.moments.m[i]);
    params.segment(state["exp_avg_sq"], i).copy_from_(window.moments.v[i]);
  }
  parts.optimizer.load_state(state, window.moments.steps);
}

StepStats recorded_step(const StepParts& parts, const StepInput& in, RecordedWindow& window) {
  const TrainConfig& config = parts.config;
  const ParameterTable& params = parts.params;
  if (!window.open) open_window(parts, window);

  StepStats s;
  s.examples = in.ids.size(0);
  s.lr = in.lr;
  const Tensor logits = parts.model.forward(window.theta, in.ids);  // [B, V]
  const Tensor loss = training_loss(config, logits, in.targets);     // []
  s.loss = loss.item();
  check_finite("loss", s.loss, in.step, parts, s.loss);
  s.accuracy = count_equal(argmax(logits), in.targets, params.dtype()).item() / static_cast<double>(s.examples);

  // The gradient, recorded: its dependence on theta is what a meta-gradient differentiates.
  const TensorList g = grad({loss}, window.theta, {}, {.create_graph = true});
  TensorList pieces;
  std::vector<Segment> segments;  // [N] flat without padding, one run per tensor
  std::int64_t at = 0;
  for (const Tensor& gi : g) {
    pieces.push_back(reshape(gi, {gi.numel()}));
    segments.push_back({at, gi.numel()});
    at += gi.numel();
  }
  const Tensor raw = concat(pieces, 0);  // [N]
  {
    NoGradGuard no_grad;
    s.grad_norm = l2_norm(raw).item();
  }
  check_finite("gradient norm", s.grad_norm, in.step, parts, s.loss);

  Tensor transformed = raw;
  for (auto& method : parts.methods) transformed = method->transform_recorded(transformed, segments);
  if (in.with_entropy) {
    NoGradGuard no_grad;
    s.age_raw = abs_entropy(raw, segments);
    s.age_transformed = abs_entropy(transformed, segments);
    for (std::size_t i = 0; i < params.size(); ++i) {
      s.age_raw.names.push_back(params.name(i));
      s.age_transformed.names.push_back(params.name(i));
    }
  }
  if (config.clip_grad_norm > 0) {
    // clip_grad_norm_: scale by max / (norm + 1e-6) when that is below 1, differentiable through the norm.
    const Tensor norm = l2_norm(transformed);
    if (config.clip_grad_norm / (norm.item() + 1e-6) < 1.0) {
      const Tensor limit = Tensor::full({}, config.clip_grad_norm, norm.dtype(), norm.device());
      transformed = mul(transformed, div(limit, add_scalar(norm, 1e-6)));
    }
  }

  TensorList step_grads;
  for (std::size_t i = 0; i < g.size(); ++i) {
    step_grads.push_back(reshape(slice(transformed, 0, segments[i].begin, segments[i].size), g[i].shape()));
  }
  if (config.optimizer == "sgd") {
    if (config.weight_decay != 0.0) {
      for (std::size_t i = 0; i < step_grads.size(); ++i) {
        step_grads[i] = add(step_grads[i], scale(window.theta[i], config.weight_decay));
      }
    }
    window.theta = sgd_update(window.theta, step_grads, in.lr);
  } else {
    const AdamConfig adam{config.beta1, config.beta2, config.eps, config.weight_decay, config.optimizer == "adamw"};
    window.theta = adam_update(window.theta, step_grads, window.moments, adam, in.lr);
  }
  ++window.steps;
  write_back(parts, window);

  bool window_done = false;
  for (auto& method : parts.methods) window_done |= method->end_recorded_step(parts.model, window.theta, window.steps);
  if (window_done) {
    tape().clear();
    window = RecordedWindow{};
  }
  return s;
}

}  // namespace

Tensor training_loss(const TrainConfig& config, const Tensor& logits, const Tensor& targets) {
  if (config.loss == "stablemax") return stablemax_cross_entropy(logits, targets);
  TG_CHECK(config.loss == "cross-entropy", "--loss '{}': expected cross-entropy or stablemax", config.loss);
  return cross_entropy(logits, targets);
}

StepStats train_step(StepMode mode, const StepParts& parts, const StepInput& in, const DeviceSlots* slots,
                     RecordedWindow* window) {
  if (mode == StepMode::recorded) {
    TG_CHECK(window != nullptr, "a recorded training step needs its window");
    return recorded_step(parts, in, *window);
  }
  const bool sync_free = mode == StepMode::sync_free;
  TG_CHECK(!sync_free || slots != nullptr, "a sync-free training step needs its device slots");
  const ParameterTable& params = parts.params;
  std::optional<HostReadGuard> no_host_reads;
  if (sync_free) no_host_reads.emplace("a sync-free training step");
  const StepContext context{in.step, sync_free, &parts.model};

  tape().clear();
  params.zero_grad();
  Tensor logits, loss;
  {
    std::optional<IdsCheckedGuard> checked;  // a sync-free run checked its whole dataset up front
    if (sync_free) checked.emplace();
    logits = parts.model.forward(params.values(), in.ids);  // [B, V]
    loss = training_loss(parts.config, logits, in.targets);  // []
  }
  backward(loss);
  tape().clear();

  StepStats s;
  s.examples = in.ids.size(0);
  s.lr = in.lr;
  {
    NoGradGuard no_grad;
    const Tensor correct = count_equal(argmax(logits), in.targets, params.dtype());  // []
    const Tensor norm = global_grad_norm(params);                                     // []
    if (sync_free) {
      s.on_device = true;
      s.loss = s.accuracy = s.grad_norm = std::numeric_limits<double>::quiet_NaN();
      for (const auto& [column, value] : {std::pair{StepStatsRing::kLoss, loss},
                                          std::pair{StepStatsRing::kCorrect, correct},
                                          std::pair{StepStatsRing::kGradNorm, norm}}) {
        Tensor cell = slots->stats.as_strided({}, {}, column);
        cell.copy_from_(value);
      }
    } else {
      s.loss = loss.item();
      check_finite("loss", s.loss, in.step, parts, s.loss);
      s.accuracy = correct.item() / static_cast<double>(s.examples);
      s.grad_norm = norm.item();
      check_finite("gradient norm", s.grad_norm, in.step, parts, s.loss);
    }
  }

  if (in.with_entropy) {
    if (sync_free) {
      Tensor slot = slots->age_raw;
      slot.copy_from_(gradient_entropy_on_device(params));
    } else {
      s.age_raw = gradient_entropy(params);
    }
  }
  for (auto& method : parts.methods) method->transform(params, context);
  if (in.with_entropy) {  // what the optimizer gets, before clipping
    if (sync_free) {
      Tensor slot = slots->age_transformed;
      slot.copy_from_(gradient_entropy_on_device(params));
    } else {
      s.age_transformed = gradient_entropy(params);
    }
  }
  // Clipping happens inside the optimizer's pass over the buffers (one pass, the same result).
  const double max_norm = parts.config.clip_grad_norm;
  const GradClip clip = max_norm > 0 ? deferred_clip_grad_norm(params, max_norm) : GradClip{};
  if (sync_free) {
    parts.optimizer.step_from_device(params, slots->optimizer_scalars, clip);
  } else {
    parts.optimizer.step(params, in.lr, clip);
  }
  return s;
}

}  // namespace tg

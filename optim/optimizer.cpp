#include "optim/optimizer.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

namespace {

// Frozen parameters (ParameterTable::set_frozen) must come out of a step exactly as they went in: the
// fused update runs over the whole flat buffers (weight decay and momentum would move a parameter even
// with a zero gradient), so the frozen segments of the values and of every state buffer are copied
// aside before the update and written back after it. Nothing is done when no parameter is frozen.
class FrozenSegments {
 public:
  FrozenSegments(const ParameterTable& params, std::initializer_list<Tensor> state) {
    if (!params.any_frozen()) return;
    TensorList buffers = {params.flat_values()};
    for (const Tensor& b : state) {
      if (b.defined()) buffers.push_back(b);
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!params.frozen(i)) continue;
      for (const Tensor& b : buffers) {
        Tensor view = params.segment(b, i);
        saved_.emplace_back(view, view.clone());
      }
    }
  }
  void restore() {
    for (auto& [view, copy] : saved_) view.copy_from_(copy);
  }

 private:
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

// The scalars tensor of step_from_device: `count` values of the parameters' dtype on their device.
void check_scalars(const char* optimizer, const ParameterTable& params, const Tensor& scalars, std::int64_t count) {
  TG_CHECK(scalars.defined() && scalars.numel() == count && scalars.dtype() == params.dtype() &&
               scalars.device() == params.device() && scalars.is_contiguous(),
           "{} step_from_device: scalars must be {} contiguous {} values on {}, got {}", optimizer, count,
           dtype_name(params.dtype()), params.device().str(), scalars.defined() ? scalars.str() : "(undefined)");
}

// A GradClip's norm: one contiguous value of the parameters' dtype on their device, and a positive limit.
void check_clip(const char* optimizer, const ParameterTable& params, const GradClip& clip) {
  if (!clip.norm.defined()) return;
  TG_CHECK(clip.norm.numel() == 1 && clip.norm.dtype() == params.dtype() && clip.norm.device() == params.device() &&
               clip.norm.is_contiguous(),
           "{} step: the clip norm must be one {} value on {}, got {}", optimizer, dtype_name(params.dtype()),
           params.device().str(), clip.norm.str());
  TG_CHECK(clip.max_norm > 0, "{} step: the clip limit must be positive, got {}", optimizer, clip.max_norm);
}

class Adam final : public Optimizer {
 public:
  Adam(const ParameterTable& params, AdamConfig config)
      : config_(config), m_(params.zeros_like_flat()), v_(params.zeros_like_flat()) {}

  const char* name() const override { return config_.decoupled_weight_decay ? "adamw" : "adam"; }

  void step(const ParameterTable& params, double lr, const GradClip& clip) override {
    check_clip("adam", params, clip);
    ++steps_;
    const AdamStep s = step_constants(lr, steps_);
    FrozenSegments frozen(params, {m_, v_});
    backend_for(params.device()).adam_update(params.flat_values(), params.flat_grads(), m_, v_, s, clip);
    frozen.restore();
    params.flat_values().storage()->bump_version();
  }

  std::vector<double> device_scalars(double lr) const override {
    const auto c = adam_device_scalars(step_constants(lr, steps_ + 1));
    return {c.begin(), c.end()};
  }

  void step_from_device(const ParameterTable& params, const Tensor& scalars, const GradClip& clip) override {
    check_scalars("adam", params, scalars, kAdamDeviceScalars);
    check_clip("adam", params, clip);
    ++steps_;
    FrozenSegments frozen(params, {m_, v_});
    // step_constants supplies the fixed fields only; lr and the bias corrections come from `scalars`.
    backend_for(params.device())
        .adam_update_device(params.flat_values(), params.flat_grads(), m_, v_, step_constants(0.0, 1), scalars,
                            clip);
    frozen.restore();
    params.flat_values().storage()->bump_version();
  }

  std::map<std::string, Tensor> state() const override { return {{"exp_avg", m_}, {"exp_avg_sq", v_}}; }

  void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) override {
    // Validate everything before changing anything.
    TG_CHECK(steps >= 0, "adam state: negative step count {}", steps);
    for (const char* key : {"exp_avg", "exp_avg_sq"}) {
      TG_CHECK(state.count(key), "adam state: missing buffer '{}'", key);
      TG_CHECK(state.at(key).numel() == m_.numel() && state.at(key).dtype() == m_.dtype(),
               "adam state: buffer '{}' is {} but the model needs [{}] {}", key, state.at(key).str(), m_.numel(),
               dtype_name(m_.dtype()));
    }
    m_.copy_from_(reshape(state.at("exp_avg"), m_.shape()));
    v_.copy_from_(reshape(state.at("exp_avg_sq"), v_.shape()));
    steps_ = steps;
  }

 private:
  // The constants of update number `step` (1-based) at learning rate lr.
  AdamStep step_constants(double lr, std::int64_t step) const {
    AdamStep s;
    s.lr = lr;
    s.beta1 = config_.beta1;
    s.beta2 = config_.beta2;
    s.eps = config_.eps;
    s.weight_decay = config_.weight_decay;
    s.decoupled_weight_decay = config_.decoupled_weight_decay;
    s.bias_correction1 = 1.0 - std::pow(config_.beta1, static_cast<double>(step));
    s.bias_correction2 = 1.0 - std::pow(config_.beta2, static_cast<double>(step));
    return s;
  }

  AdamConfig config_;
  Tensor m_, v_;
};

class Sgd final : public Optimizer {
 public:
  Sgd(const ParameterTable& params, SgdConfig config) : config_(config) {
    if (config.momentum != 0.0) buf_ = params.zeros_like_flat();
  }

  const char* name() const override { return "sgd"; }

  std::vector<double> device_scalars(double lr) const override { return {lr, steps_ == 0 ? 1.0 : 0.0}; }

  void step_from_device(const ParameterTable& params, const Tensor& scalars, const GradClip& clip) override {
    check_scalars("sgd", params, scalars, kSgdDeviceScalars);
    check_clip("sgd", params, clip);
    FrozenSegments frozen(params, {buf_});
    backend_for(params.device())
        .sgd_update_device(params.flat_values(), params.flat_grads(), buf_, scalars, config_.momentum,
                           config_.weight_decay, clip);
    frozen.restore();
    params.flat_values().storage()->bump_version();
    ++steps_;
  }

  void step(const ParameterTable& params, double lr, const GradClip& clip) override {
    check_clip("sgd", params, clip);
    FrozenSegments frozen(params, {buf_});
    backend_for(params.device())
        .sgd_update(params.flat_values(), params.flat_grads(), buf_, lr, config_.momentum, config_.weight_decay,
                    steps_ == 0, clip);
    frozen.restore();
    params.flat_values().storage()->bump_version();
    ++steps_;
  }

  std::map<std::string, Tensor> state() const override {
    if (!buf_.defined()) return {};
    return {{"momentum_buffer", buf_}};
  }

  void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) override {
    TG_CHECK(steps >= 0, "sgd state: negative step count {}", steps);
    if (buf_.defined()) {
      TG_CHECK(state.count("momentum_buffer"), "sgd state: missing buffer 'momentum_buffer'");
      const Tensor& b = state.at("momentum_buffer");
      TG_CHECK(b.numel() == buf_.numel() && b.dtype() == buf_.dtype(),
               "sgd state: buffer 'momentum_buffer' is {} but the model needs [{}]", b.str(), buf_.numel());
      buf_.copy_from_(reshape(b, buf_.shape()));
    }
    steps_ = steps;
  }

 private:
  SgdConfig config_;
  Tensor buf_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adam(const ParameterTable& params, AdamConfig config) {
  TG_CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1,
           "adam: betas must lie in [0, 1), got ({}, {})", config.beta1, config.beta2);
  TG_CHECK(config.eps > 0, "adam: eps must be positive, got {}", config.eps);
  TG_CHECK(config.weight_decay >= 0, "adam: weight decay must be >= 0, got {}", config.weight_decay);
  return std::make_unique<Adam>(params, config);
}

std::unique_ptr<Optimizer> make_sgd(const ParameterTable& params, SgdConfig config) {
  TG_CHECK(config.momentum >= 0 && config.momentum < 1, "sgd: momentum must lie in [0, 1), got {}", config.momentum);
  TG_CHECK(config.weight_decay >= 0, "sgd: weight decay must be >= 0, got {}", config.weight_decay);
  return std::make_unique<Sgd>(params, config);
}

void Optimizer::upload_device_scalars(double lr, const Tensor& scalars) const {
  const std::vector<double> values = device_scalars(lr);
  TG_CHECK(scalars.defined() && scalars.numel() == static_cast<std::int64_t>(values.size()) && scalars.is_contiguous(),
           "{}: the device scalars tensor must hold {} contiguous values, got {}", name(), values.size(),
           scalars.defined() ? scalars.str() : "(undefined)");
  Backend& be = backend_for(scalars.device());
  if (scalars.dtype() == DType::f64) {
    be.copy_from_host_async(scalars.raw_data(), values.data(), values.size() * sizeof(double));
  } else {
    const std::vector<float> rounded(values.begin(), values.end());
    be.copy_from_host_async(scalars.raw_data(), rounded.data(), rounded.size() * sizeof(float));
  }
  scalars.storage()->bump_version();
}

double warmup_lr(double lr, std::int64_t step, std::int64_t warmup_steps) {
  if (warmup_steps <= 0) return lr;
  return lr * std::min(1.0, static_cast<double>(step) / static_cast<double>(warmup_steps));
}

}  // namespace tg

#include "optim/grokfast.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "engine/ops.h"
#include "optim/method_kernels.h"

namespace tg {

namespace {

// The table's flat gradients must have the layout the filter's state was made for.
void check_table(const char* filter, const ParameterTable& params, const Tensor& like) {
  const Tensor& g = params.flat_grads();
  TG_CHECK(g.numel() == like.numel() && g.dtype() == like.dtype() && g.device() == like.device(),
           "{}: the parameter table's gradients {} do not match the filter's state {} (made for another table?)",
           filter, g.str(), like.str());
}

// state[key] exists and has `like`'s element count and dtype.
const Tensor& state_buffer(const char* filter, const std::map<std::string, Tensor>& state, const char* key,
                           const Tensor& like) {
  auto it = state.find(key);
  TG_CHECK(it != state.end(), "{} state: missing buffer '{}'", filter, key);
  TG_CHECK(it->second.numel() == like.numel() && it->second.dtype() == like.dtype(),
           "{} state: buffer '{}' is {} but this model needs {} {} elements", filter, key, it->second.str(),
           like.numel(), dtype_name(like.dtype()));
  return it->second;
}

}  // namespace

// ---------------------------------------------------------------- EMA

GrokfastEma::GrokfastEma(const ParameterTable& params, GrokfastEmaConfig config)
    : config_(config), mu_(params.zeros_like_flat()) {
  TG_CHECK(config.alpha >= 0 && config.alpha < 1, "grokfast-ema: alpha must lie in [0, 1), got {}", config.alpha);
  TG_CHECK(std::isfinite(config.lambda) && config.lambda >= 0, "grokfast-ema: lambda must be >= 0, got {}",
           config.lambda);
}

void GrokfastEma::apply(const ParameterTable& params) {
  check_table("grokfast-ema", params, mu_);
  method_kernels_for(params.device())
      .grokfast_ema(params.flat_grads(), mu_, config_.alpha, config_.lambda, steps_ == 0);
  params.flat_grads().storage()->bump_version();
  mu_.storage()->bump_version();
  ++steps_;
}

std::map<std::string, Tensor> GrokfastEma::state() const { return {{"mu", mu_}}; }

void GrokfastEma::load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) {
  TG_CHECK(steps >= 0, "grokfast-ema state: negative step count {}", steps);
  const Tensor& mu = state_buffer("grokfast-ema", state, "mu", mu_);
  mu_.copy_from_(reshape(mu, mu_.shape()));
  steps_ = steps;
}

// ---------------------------------------------------------------- MA

GrokfastMa::GrokfastMa(const ParameterTable& params, GrokfastMaConfig config) : config_(config) {
  TG_CHECK(config.window >= 1, "grokfast-ma: the window must hold at least 1 gradient, got {}", config.window);
  TG_CHECK(std::isfinite(config.lambda) && config.lambda >= 0, "grokfast-ma: lambda must be >= 0, got {}",
           config.lambda);
  ring_ = Tensor::zeros({config.window, params.padded_numel()}, params.dtype(), params.device());
  sum_ = params.zeros_like_flat();
  comp_ = params.zeros_like_flat();
}

std::int64_t GrokfastMa::held() const { return steps_ < config_.window ? steps_ : config_.window; }

void GrokfastMa::apply(const ParameterTable& params) {
  check_table("grokfast-ma", params, sum_);
  const std::int64_t n = sum_.numel(), w = config_.window;
  const Tensor slot = ring_.as_strided({n}, {1}, (steps_ % w) * n);
  const bool evict = steps_ >= w;        // the slot holds the oldest gradient of a full window
  const bool amplify = steps_ + 1 >= w;  // the window is full once this gradient is in
  method_kernels_for(params.device())
      .grokfast_ma(params.flat_grads(), slot, sum_, comp_, config_.lambda, w, evict, amplify);
  params.flat_grads().storage()->bump_version();
  ring_.storage()->bump_version();
  sum_.storage()->bump_version();
  comp_.storage()->bump_version();
  ++steps_;
}

std::map<std::string, Tensor> GrokfastMa::state() const { return {{"window", ring_}, {"sum", sum_}, {"comp", comp_}}; }

void GrokfastMa::load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) {
  // Validate everything before changing anything.
  TG_CHECK(steps >= 0, "grokfast-ma state: negative step count {}", steps);
  const Tensor& ring = state_buffer("grokfast-ma", state, "window", ring_);
  TG_CHECK(ring.shape() == ring_.shape(), "grokfast-ma state: buffer 'window' is {} but a window of {} needs [{}, {}]",
           ring.str(), config_.window, ring_.size(0), ring_.size(1));
  const Tensor& sum = state_buffer("grokfast-ma", state, "sum", sum_);
  const Tensor& comp = state_buffer("grokfast-ma", state, "comp", comp_);
  ring_.copy_from_(ring);
  sum_.copy_from_(reshape(sum, sum_.shape()));
  comp_.copy_from_(reshape(comp, comp_.shape()));
  steps_ = steps;
}

std::unique_ptr<GradientFilter> make_grokfast_ema(const ParameterTable& params, GrokfastEmaConfig config) {
  return std::make_unique<GrokfastEma>(params, config);
}

std::unique_ptr<GradientFilter> make_grokfast_ma(const ParameterTable& params, GrokfastMaConfig config) {
  return std::make_unique<GrokfastMa>(params, config);
}

}  // namespace tg

// Grokfast gradient filters (arXiv 2405.20233; docs/methods.md) over a ParameterTable's flat
// gradient buffer, in place, one fused pass per step (MethodKernels::grokfast_ema / grokfast_ma).
//
//   EMA:  mu <- alpha mu + (1 - alpha) g   (mu starts as the first g);   g <- g + lambda mu.
//   MA:   keep the last `window` raw gradients; once `window` are held (the current one included),
//         g <- g + lambda mean(window); before that g is left unchanged.
//
// Both follow the reference code (gradfilter_ema / gradfilter_ma with warmup=True, filter "mean").
// Call apply() after backward and before clipping / the optimizer step. The padding of the flat
// buffer stays zero (its gradients are zero).
//
// MA bookkeeping: a ring of `window` flat buffers ([window, padded numel]) and the window's running
// sum, updated with two Neumaier-compensated additions per step (+ new gradient, - evicted one) into
// (sum, comp). The pair tracks the exact window sum to about one rounding of the sum, independent of
// the number of steps (an uncompensated running sum would drift by ~1 rounding per step, a random
// walk of the evicted terms' errors). Cost per step: one pass reading g, the evicted slot, sum, comp
// and writing g, slot, sum, comp (8 floats per entry), against `window` reads per entry to recompute
// the mean. Memory: (window + 2) flat buffers (100 x 1.7 MB for the default Transformer in f32).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "engine/parameters.h"

namespace tg {

// A stateful in-place transform of a table's flat gradient buffer, with checkpointable state.
class GradientFilter {
 public:
  virtual ~GradientFilter() = default;
  virtual const char* name() const = 0;
  // Filters params.flat_grads() in place (one backend pass) and counts the step.
  virtual void apply(const ParameterTable& params) = 0;
  std::int64_t steps() const { return steps_; }  // gradients seen so far

  // ---- CUDA graphs ----
  // True when apply() now launches the same kernels with the same arguments at every later step, so a
  // captured graph may replay it: EMA after its first step; MA never (its window slot moves each step).
  virtual bool replayable() const = 0;
  // The host half of apply() alone, for a step whose device work a graph replay did.
  void count_replayed_step() { ++steps_; }

  // Checkpoint state: named flat buffers plus the step count.
  virtual std::map<std::string, Tensor> state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) = 0;

 protected:
  std::int64_t steps_ = 0;
};

struct GrokfastEmaConfig {
  double alpha = 0.98;  // decay of the moving average, in [0, 1)
  double lambda = 2.0;  // amplification
};

struct GrokfastMaConfig {
  std::int64_t window = 100;  // gradients averaged, >= 1
  double lambda = 5.0;        // amplification
};

class GrokfastEma final : public GradientFilter {
 public:
  GrokfastEma(const ParameterTable& params, GrokfastEmaConfig config);
  const char* name() const override { return "grokfast-ema"; }
  void apply(const ParameterTable& params) override;
  bool replayable() const override { return steps_ > 0; }  // the first step seeds mu instead
  std::map<std::string, Tensor> state() const override;  // {"mu": [padded numel]}
  void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) override;
  const GrokfastEmaConfig& config() const { return config_; }

 private:
  GrokfastEmaConfig config_;
  Tensor mu_;
};

class GrokfastMa final : public GradientFilter {
 public:
  GrokfastMa(const ParameterTable& params, GrokfastMaConfig config);
  const char* name() const override { return "grokfast-ma"; }
  void apply(const ParameterTable& params) override;
  bool replayable() const override { return false; }  // slot, evict and amplify depend on the step
  // {"window": [window, padded numel] (gradient of step t in row t % window), "sum", "comp": [padded numel]}
  std::map<std::string, Tensor> state() const override;
  void load_state(const std::map<std::string, Tensor>& state, std::int64_t steps) override;
  const GrokfastMaConfig& config() const { return config_; }
  std::int64_t held() const;  // raw gradients in the window now (min(steps, window))

 private:
  GrokfastMaConfig config_;
  Tensor ring_, sum_, comp_;
};

std::unique_ptr<GradientFilter> make_grokfast_ema(const ParameterTable& params, GrokfastEmaConfig config);
std::unique_ptr<GradientFilter> make_grokfast_ma(const ParameterTable& params, GrokfastMaConfig config);

}  // namespace tg

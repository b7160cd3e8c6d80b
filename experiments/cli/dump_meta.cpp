#include "experiments/cli/dump_meta.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include <memory>

#include "experiments/cli/cli_options.h"
#include "experiments/training/trainer.h"
#include "optim/amplifier.h"
#include "optim/differentiable_step.h"

namespace tg {

namespace {

// Flattens per-parameter gradients into one buffer, amplifies it, and splits it back (recorded).
TensorList amplified(const Amplifier& amp, const TensorList& amp_params, const TensorList& grads) {
  TensorList pieces;
  std::vector<Segment> segments;
  std::int64_t at = 0;
  for (const Tensor& g : grads) {
    pieces.push_back(reshape(g, {g.numel()}));
    segments.push_back({at, g.numel()});
    at += g.numel();
  }
  const Tensor out = amp.apply(amp_params, concat(pieces, 0), segments);
  TensorList split;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    split.push_back(reshape(slice(out, 0, segments[i].begin, segments[i].size), grads[i].shape()));
  }
  return split;
}

TensorList fresh_leaves(const TensorList& xs) {
  TensorList out;
  for (const Tensor& x : xs) out.push_back(x.detach().clone().set_requires_grad(true));
  return out;
}

}  // namespace

void dump_meta(const TrainConfig& config_in, const MetaDumpOptions& o) {
  TG_CHECK(o.meta_grad == "lookahead" || o.meta_grad == "unrolled", "dump-meta: --meta-grad '{}': expected lookahead or unrolled",
           o.meta_grad);
  TG_CHECK(o.inner_optimizer == "sgd" || o.inner_optimizer == "adam", "dump-meta: --inner-opt '{}': expected sgd or adam",
           o.inner_optimizer);
  TG_CHECK(o.steps >= 1, "dump-meta: --T must be at least 1, got {}", o.steps);
  TG_CHECK(o.batch >= 1, "dump-meta: --batch must be at least 1, got {}", o.batch);
  TG_CHECK(o.lr > 0, "dump-meta: --lr must be positive, got {}", o.lr);
  TrainConfig config = config_in;
  if (config.outer_fraction == 0.0) config.outer_fraction = 0.01;
  Trainer trainer(config);
  const auto& train = trainer.split().train;
  TG_CHECK(o.steps * o.batch <= static_cast<std::int64_t>(train.size()),
           "dump-meta: {} batches of {} need more than the {} training examples", o.steps, o.batch, train.size());

  const ParameterTable& params = trainer.params();
  Amplifier amp(AmplifierConfig{parse_hidden_sizes(config.amp_hidden), config.amp_c});
  ParameterTable amp_params(amp.parameter_specs(), params.dtype(), params.device());
  Rng amp_rng(config.seed * 4 + 3);
  amp.initialize(amp_params, amp_rng);

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < params.size(); ++i) tensors.emplace_back(params.name(i), params[i].clone());
  for (std::size_t i = 0; i < amp_params.size(); ++i) tensors.emplace_back(amp_params.name(i), amp_params[i].clone());

  std::vector<Tensor> ids(static_cast<std::size_t>(o.steps)), targets(static_cast<std::size_t>(o.steps));
  for (std::int64_t k = 0; k < o.steps; ++k) {
    std::vector<std::int64_t> examples(train.begin() + k * o.batch, train.begin() + (k + 1) * o.batch);
    gather_examples(trainer.dataset(), examples, trainer.device(), ids[static_cast<std::size_t>(k)],
                    targets[static_cast<std::size_t>(k)]);
    tensors.emplace_back(fmt::format("inner_inputs.{}", k), ids[static_cast<std::size_t>(k)]);
    tensors.emplace_back(fmt::format("inner_targets.{}", k), targets[static_cast<std::size_t>(k)]);
  }
  Tensor outer_ids, outer_targets;
  gather_examples(trainer.dataset(), trainer.split().outer, trainer.device(), outer_ids, outer_targets);
  tensors.emplace_back("outer_inputs", outer_ids);
  tensors.emplace_back("outer_targets", outer_targets);

  const Model& model = trainer.model();
  const AdamConfig adam{config.beta1, config.beta2, 1e-8, 0.0, false};
  tape().clear();
  TensorList theta = fresh_leaves(params.values());
  AdamMoments moments = AdamMoments::zeros_like(theta);
  auto inner_update = [&](const TensorList& t, const TensorList& g) {
    return o.inner_optimizer == "sgd" ? sgd_update(t, g, o.lr) : adam_update(t, g, moments, adam, o.lr);
  };
  const bool unrolled = o.meta_grad == "unrolled";
  for (std::int64_t k = 0; k < o.steps; ++k) {
    const auto kk = static_cast<std::size_t>(k);
    const Tensor loss = cross_entropy(model.forward(theta, ids[kk]), targets[kk]);
    const bool last = k + 1 == o.steps;
    if (unrolled) {
      const TensorList g = grad({loss}, theta, {}, {.create_graph = true});
      theta = inner_update(theta, amplified(amp, amp_params.values(), g));
    } else if (!last) {
      // Lookahead: the steps before the last are plain training steps, not differentiated.
      TensorList g = grad({loss}, theta);
      TensorList next;
      {
        NoGradGuard no_grad;
        next = inner_update(theta, amplified(amp, amp_params.values(), g));
      }
      tape().clear();
      theta = fresh_leaves(next);
    } else {
      // The look-ahead itself: g held constant, one plain SGD step with the amplified gradient.
      TensorList g = grad({loss}, theta);
      TensorList constant_theta;
      for (const Tensor& t : theta) constant_theta.push_back(t.detach());
      theta = sgd_update(constant_theta, amplified(amp, amp_params.values(), g), o.lr);
    }
  }
  const Tensor outer_loss = cross_entropy(model.forward(theta, outer_ids), outer_targets);
  const TensorList metagrad = grad({outer_loss}, amp_params.values());
  tape().clear();
  tensors.emplace_back("outer_loss", reshape(outer_loss.detach(), {1}));
  for (std::size_t i = 0; i < amp_params.size(); ++i) tensors.emplace_back("metagrad." + amp_params.name(i), metagrad[i]);
  for (auto& [name, t] : tensors) {
    if (t.dtype() == DType::f64) t = t.to(DType::f32);
  }
  save_safetensors(o.out, tensors,
                   {{"format", "tapegrok-dump-meta-v1"},
                    {"config", to_json(config).dump()},
                    {"meta_grad", o.meta_grad},
                    {"steps", std::to_string(o.steps)},
                    {"inner_optimizer", o.inner_optimizer},
                    {"lr", fmt::format("{}", o.lr)},
                    {"c", fmt::format("{}", config.amp_c)},
                    {"beta1", fmt::format("{}", config.beta1)},
                    {"beta2", fmt::format("{}", config.beta2)}});
}

ExtraCommand register_dump_meta_command(CLI::App& app) {
  struct State {
    TrainConfig config;
    MetaDumpOptions options;
  };
  auto state = std::make_shared<State>();
  CLI::App* cmd = app.add_subcommand("dump-meta", "write one NeuralGrok meta-gradient and all its inputs");
  auto options = std::make_shared<ConfigOptions>(cmd, state->config);
  add_task_and_model_options(*options);
  add_amplifier_options(*options);
  cmd->add_option("--meta-grad", state->options.meta_grad, "lookahead | unrolled")->capture_default_str();
  cmd->add_option("--T", state->options.steps, "inner steps K")->capture_default_str();
  cmd->add_option("--inner-opt", state->options.inner_optimizer, "sgd | adam")->capture_default_str();
  cmd->add_option("--lr", state->options.lr, "inner (and look-ahead) learning rate")->capture_default_str();
  cmd->add_option("--c", state->config.amp_c, "amplifier output norm c (same as --amp-c)");
  cmd->add_option("--batch", state->options.batch, "examples per inner batch")->capture_default_str();
  cmd->add_option("--out", state->options.out, "output safetensors file")->required();
  return {cmd, [state, options] {
            dump_meta(state->config, state->options);
            fmt::print("wrote {}\n", state->options.out);
          }};
}

}  // namespace tg

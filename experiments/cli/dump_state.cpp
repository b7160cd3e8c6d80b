#include "experiments/cli/dump_state.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "engine/second_order.h"
#include "experiments/training/trainer.h"

namespace tg {

void dump_state(const TrainConfig& config, std::int64_t batch, std::int64_t adam_steps, bool hvp,
                const std::string& out) {
  TG_CHECK(batch >= 1, "dump-state: --batch must be at least 1, got {}", batch);
  TG_CHECK(adam_steps >= 0, "dump-state: --adam-steps must be >= 0, got {}", adam_steps);
  Trainer trainer(config);
  const ParameterTable& params = trainer.params();
  const auto& train = trainer.split().train;
  TG_CHECK(batch <= static_cast<std::int64_t>(train.size()), "dump-state: --batch {} exceeds the {} training examples",
           batch, train.size());
  std::vector<std::int64_t> examples(train.begin(), train.begin() + batch);
  Tensor ids, targets;
  gather_examples(trainer.dataset(), examples, trainer.device(), ids, targets);

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < params.size(); ++i) tensors.emplace_back(params.name(i), params[i].clone());
  tensors.emplace_back("inputs", ids);
  tensors.emplace_back("targets", targets);

  tape().clear();
  params.zero_grad();
  Tensor logits = trainer.model().forward(params.values(), ids);
  Tensor loss = cross_entropy(logits, targets);
  backward(loss);
  tape().clear();
  tensors.emplace_back("logits", logits.detach());
  tensors.emplace_back("loss", reshape(loss.detach(), {1}));
  for (std::size_t i = 0; i < params.size(); ++i) tensors.emplace_back("grad." + params.name(i), params[i].grad().clone());

  if (hvp) {
    // H v of the same mean loss for a random direction v (normal entries, seeded by the run seed).
    Rng rng(config.seed + 1000);
    TensorList v;
    for (std::size_t i = 0; i < params.size(); ++i) {
      v.push_back(normal_tensor(rng, params[i].shape(), 0.0, 1.0, params.dtype(), params.device()));
    }
    tape().clear();
    Tensor l = cross_entropy(trainer.model().forward(params.values(), ids), targets);
    const TensorList hv = hessian_vector_product(l, params.values(), v);
    tape().clear();
    for (std::size_t i = 0; i < params.size(); ++i) {
      tensors.emplace_back("hvp.v." + params.name(i), v[i]);
      tensors.emplace_back("hvp." + params.name(i), hv[i]);
    }
  }

  if (adam_steps > 0) {
    auto adam = make_adam(params, {0.9, 0.98, 1e-8, 0.0, false});
    std::vector<float> losses;
    for (std::int64_t k = 0; k < adam_steps; ++k) {
      tape().clear();
      params.zero_grad();
      Tensor l = cross_entropy(trainer.model().forward(params.values(), ids), targets);
      backward(l);
      tape().clear();
      losses.push_back(static_cast<float>(l.item()));
      adam->step(params, 1e-3);
    }
    tensors.emplace_back("adam_loss", Tensor::from_vector(losses, {adam_steps}));
  }
  // Floating tensors are stored as f32 whatever the run's dtype, as documented.
  for (auto& [name, t] : tensors) {
    if (t.dtype() == DType::f64) t = t.to(DType::f32);
  }
  save_safetensors(out, tensors, {{"format", "tapegrok-dump-state-v1"}, {"config", to_json(config).dump()}});
}

}  // namespace tg

#include "experiments/train_config.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "experiments/tasks.h"

namespace tg {

std::int64_t TrainConfig::resolved_modulus() const { return modulus > 0 ? modulus : default_modulus(task); }

TransformerConfig TrainConfig::model_config(std::int64_t vocab, std::int64_t seq_len) const {
  TransformerConfig m;
  m.vocab = vocab;
  m.seq_len = seq_len;
  m.width = width;
  m.heads = heads;
  m.layers = layers;
  m.block = parse_block_variant(block);
  return m;
}

void TrainConfig::validate() const {
  TG_CHECK(optimizer == "adam" || optimizer == "adamw" || optimizer == "sgd",
           "--optimizer '{}': expected adam, adamw or sgd", optimizer);
  TG_CHECK(lr > 0, "--lr must be positive, got {}", lr);
  TG_CHECK(batch_size >= 1, "--batch-size must be at least 1, got {}", batch_size);
  TG_CHECK(max_steps >= 0, "--steps must be >= 0, got {}", max_steps);
  TG_CHECK(warmup_steps >= 0, "--warmup must be >= 0, got {}", warmup_steps);
  TG_CHECK(eval_every >= 0, "--eval-every must be >= 0, got {}", eval_every);
  TG_CHECK(checkpoint_every >= 0, "--checkpoint-every must be >= 0, got {}", checkpoint_every);
  TG_CHECK(clip_grad_norm >= 0, "--clip-grad-norm must be >= 0, got {}", clip_grad_norm);
  TG_CHECK(grad_normalize >= 0, "--grad-normalize must be >= 0, got {}", grad_normalize);
  TG_CHECK(stop_at_test_acc >= 0 && stop_at_test_acc <= 1, "--stop-at-test-acc must lie in [0, 1], got {}",
           stop_at_test_acc);
  TG_CHECK(dtype == "f32" || dtype == "f64", "--dtype '{}': expected f32 or f64", dtype);
  TG_CHECK(!run_dir.empty(), "--run-dir must not be empty");
  (void)parse_task_layout(layout);
  (void)parse_block_variant(block);
  (void)parse_device(device);
}

#define TG_CONFIG_FIELDS(X)                                                                                 \
  X(task) X(modulus) X(layout) X(train_fraction) X(outer_fraction) X(seed) X(layers) X(width) X(heads) X(block) \
  X(optimizer) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(momentum) X(warmup_steps) X(batch_size)        \
  X(max_steps) X(clip_grad_norm) X(grad_normalize) X(eval_every) X(stop_at_test_acc) X(checkpoint_every)      \
  X(device) X(dtype) X(run_dir) X(progress)

nlohmann::json to_json(const TrainConfig& c) {
  nlohmann::json j;
#define X(field) j[#field] = c.field;
  TG_CONFIG_FIELDS(X)
#undef X
  return j;
}

TrainConfig train_config_from_json(const nlohmann::json& j) {
  TG_CHECK(j.is_object(), "run config: expected a JSON object");
  TrainConfig c;
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    try {
#define X(field)                                  \
  if (key == #field) {                            \
    value.get_to(c.field);                        \
    known = true;                                 \
  }
      TG_CONFIG_FIELDS(X)
#undef X
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("run config: setting '{}' has the wrong type ({})", key, e.what()));
    }
    TG_CHECK(known, "run config: unknown setting '{}'", key);
  }
  return c;
}

}  // namespace tg

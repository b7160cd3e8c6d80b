#include "experiments/training/train_config.h"

#include <algorithm>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

#include "engine/error.h"
#include "experiments/training/tasks.h"

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
  const std::vector<std::string>& tasks = task_names();
  TG_CHECK(std::find(tasks.begin(), tasks.end(), task) != tasks.end(),
           "--task '{}': expected one of a+b, a-b, a*b, a*a-b, a*c+b*d-e", task);
  // Sizes are bounded where a larger value could only overflow an allocation or an index, not run.
  TG_CHECK(modulus == 0 || (modulus >= 2 && modulus <= 4096), "--modulus must be 0 (the task's default) or in "
           "[2, 4096], got {}", modulus);
  TG_CHECK(layers >= 1 && layers <= 1024, "--layers must lie in [1, 1024], got {}", layers);
  TG_CHECK(width >= 1 && width <= 65536, "--width must lie in [1, 65536], got {}", width);
  TG_CHECK(heads >= 1 && heads <= width, "--heads must lie in [1, width {}], got {}", width, heads);
  TG_CHECK(embed_dim <= 65536 && embedding_rank <= 65536, "--embed-dim and --embedding-rank must be at most 65536");
  TG_CHECK(batch_size <= (std::int64_t{1} << 24), "--batch-size must be at most 2^24, got {}", batch_size);
  TG_CHECK(train_fraction > 0 && train_fraction < 1, "--train-fraction must lie in (0, 1), got {}", train_fraction);
  TG_CHECK(outer_fraction >= 0 && outer_fraction < train_fraction,
           "--outer-fraction must lie in [0, train fraction {}), got {}", train_fraction, outer_fraction);
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
  TG_CHECK(model == "transformer" || model == "fnn", "--model '{}': expected transformer or fnn", model);
  TG_CHECK(embed_dim >= 0 && embedding_rank >= 0, "--embed-dim and --embedding-rank must be >= 0");
  TG_CHECK(loss == "cross-entropy" || loss == "stablemax", "--loss '{}': expected cross-entropy or stablemax", loss);
  TG_CHECK(grokfast_alpha >= 0 && grokfast_alpha < 1, "--grokfast-alpha must lie in [0, 1), got {}", grokfast_alpha);
  TG_CHECK(grokfast_lambda >= 0, "--grokfast-lambda must be >= 0, got {}", grokfast_lambda);
  TG_CHECK(grokfast_window >= 1, "--grokfast-window must be at least 1, got {}", grokfast_window);
  TG_CHECK(amp_c > 0, "--amp-c must be positive, got {}", amp_c);
  TG_CHECK(amp_lr > 0 && amp_weight_decay >= 0, "--amp-lr must be positive and --amp-weight-decay >= 0");
  TG_CHECK(meta_every >= 1, "--meta-every must be at least 1, got {}", meta_every);
  TG_CHECK(meta_grad == "lookahead" || meta_grad == "unrolled", "--meta-grad '{}': expected lookahead or unrolled",
           meta_grad);
  TG_CHECK(method != "neuralgrok" || outer_fraction > 0,
           "--method neuralgrok needs an outer set: set --outer-fraction (the paper uses 0.01)");
  TG_CHECK(!run_dir.empty(), "--run-dir must not be empty");
  TG_CHECK(split_seed >= -1, "--split-seed must be a seed (>= 0) or -1 (the run's --seed), got {}", split_seed);
  (void)parse_task_layout(layout);
  (void)parse_block_variant(block);
  (void)parse_device(device);
}

#define TG_CONFIG_FIELDS(X)                                                                                 \
  X(task) X(modulus) X(layout) X(train_fraction) X(outer_fraction) X(seed) X(split_seed)                       \
  X(model) X(layers) X(width) X(heads) X(block) X(embed_dim) X(fnn_bias) X(embedding_rank)                      \
  X(init_embedding_from) X(transfer_init_scale) X(freeze_embedding_a)                                           \
  X(loss) X(method) X(grokfast_alpha) X(grokfast_lambda) X(grokfast_window) X(amp_hidden) X(amp_c) X(amp_lr)            \
  X(amp_weight_decay) X(meta_every) X(meta_grad) X(amp_from) X(amp_frozen)                                      \
  X(optimizer) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay) X(momentum) X(warmup_steps) X(batch_size)        \
  X(max_steps) X(clip_grad_norm) X(grad_normalize) X(cuda_graph) X(eval_every) X(stop_at_test_acc)           \
  X(checkpoint_every) X(keep_checkpoints) X(device) X(dtype) X(run_dir) X(progress)

nlohmann::json to_json(const TrainConfig& c) {
  nlohmann::json j;
#define X(field) j[#field] = c.field;
  TG_CONFIG_FIELDS(X)
#undef X
  return j;
}

namespace {

// A setting from JSON, only when the JSON value has the setting's kind and fits it exactly (nlohmann's
// own conversions would truncate 1.5 to 1 and wrap -1 into an unsigned seed).
template <class T>
void read_setting(const std::string& key, const nlohmann::json& value, T& out) {
  bool fits = false;
  if constexpr (std::is_same_v<T, bool>) {
    fits = value.is_boolean();
  } else if constexpr (std::is_integral_v<T>) {
    if (value.is_number_unsigned()) {
      fits = value.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
    } else if (value.is_number_integer()) {
      fits = std::is_signed_v<T> && value.get<std::int64_t>() >= static_cast<std::int64_t>(std::numeric_limits<T>::min());
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    fits = value.is_number();
  } else {
    fits = value.is_string();
  }
  TG_CHECK(fits, "run config: setting '{}' = {} is not a value it can take", key, value.dump());
  value.get_to(out);
}

}  // namespace

TrainConfig train_config_from_json(const nlohmann::json& j) {
  TG_CHECK(j.is_object(), "run config: expected a JSON object");
  TrainConfig c;
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    try {
#define X(field)                                  \
  if (key == #field) {                            \
    read_setting(key, value, c.field);            \
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

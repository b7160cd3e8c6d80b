#include "experiments/model_factory.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "models/transformer.h"

namespace tg {

std::unique_ptr<Model> make_model(const TrainConfig& config, std::int64_t vocab, std::int64_t seq_len) {
  TG_CHECK(config.model == "transformer", "--model '{}' is not available in this build", config.model);
  TG_CHECK(config.embedding_rank == 0, "--embedding-rank is not available in this build");
  return std::make_unique<Transformer>(config.model_config(vocab, seq_len));
}

void apply_weight_loading(const TrainConfig& config, const Model&, const ParameterTable&, Rng&) {
  TG_CHECK(config.init_embedding_from.empty(), "--init-embedding-from is not available in this build");
}

}  // namespace tg

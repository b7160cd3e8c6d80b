#include "experiments/training/model_factory.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "experiments/training/embedding_transfer.h"
#include "models/fnn.h"
#include "models/token_embedding.h"
#include "models/transformer.h"

namespace tg {

std::unique_ptr<Model> make_model(const TrainConfig& config, std::int64_t vocab, std::int64_t seq_len) {
  TG_CHECK(config.embedding_rank >= 0, "--embedding-rank must be >= 0, got {}", config.embedding_rank);
  if (config.model == "transformer") {
    TG_CHECK(config.embed_dim == 0 || config.embed_dim == config.width,
             "--embed-dim {} is an fnn setting: the transformer's embedding has the model width ({})", config.embed_dim,
             config.width);
    TransformerConfig m = config.model_config(vocab, seq_len);
    m.embedding_rank = config.embedding_rank;
    return std::make_unique<Transformer>(m);
  }
  if (config.model == "fnn") {
    FnnConfig f;
    f.vocab = vocab;
    f.seq_len = seq_len;
    f.embed_dim = config.embed_dim > 0 ? config.embed_dim : config.width;
    f.width = config.width;
    f.layers = config.layers;
    f.bias = config.fnn_bias;
    f.embedding_rank = config.embedding_rank;
    return std::make_unique<Fnn>(f);
  }
  throw Error(fmt::format("--model '{}': expected transformer or fnn", config.model));
}

void apply_weight_loading(const TrainConfig& config, const Model& model, ParameterTable& params, Rng& rng,
                          bool load_files) {
  TG_CHECK(config.transfer_init_scale >= 0, "--transfer-init-scale must be >= 0, got {}", config.transfer_init_scale);
  const bool factorised = params.contains(kTokenEmbeddingA);
  if (config.freeze_embedding_a) {
    TG_CHECK(factorised || !config.init_embedding_from.empty(),
             "--freeze-embedding-a: the {} has no factor A to freeze (set --embedding-rank) and no transferred "
             "embedding (set --init-embedding-from)", model.name());
  }
  if (load_files && !config.init_embedding_from.empty()) {
    TransferOptions options;
    options.init_scale = config.transfer_init_scale;
    options.expected_config = &config;
    transfer_embedding(config.init_embedding_from, params, rng, options);
  }
  if (config.freeze_embedding_a) {
    params.set_frozen(params.index_of(factorised ? kTokenEmbeddingA : kTokenEmbeddingWeight), true);
  }
}

}  // namespace tg

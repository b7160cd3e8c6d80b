// Builds the model a run's config names, and applies initialisation that comes from outside the
// model itself (weights loaded from files: GrokTransfer's embedding pass).
#pragma once

#include <memory>

#include "engine/parameters.h"
#include "engine/random.h"
#include "experiments/training/train_config.h"
#include "models/model.h"

namespace tg {

// --model transformer | fnn, with a factorised token embedding when --embedding-rank > 0.
std::unique_ptr<Model> make_model(const TrainConfig& config, std::int64_t vocab, std::int64_t seq_len);

// Runs after model.initialize(): loads what the config asks for into `params` (nothing by default).
//   --init-embedding-from FILE   GrokTransfer (experiments/training/embedding_transfer.h, transfer_embedding): A = the weak
//                                model's embedding, B redrawn from rng; or a direct copy (rank 0, same d)
//   --freeze-embedding-a         marks token_embeddings.A (or the directly copied token_embeddings.weight)
//                                frozen in the table: no updates at all from any optimizer
// Non-const table: freezing changes which leaves require gradients. With load_files false (a run about
// to be restored from its own checkpoint) nothing is read from other files; freezing still applies.
void apply_weight_loading(const TrainConfig& config, const Model& model, ParameterTable& params, Rng& rng,
                          bool load_files = true);

}  // namespace tg

// GrokTransfer's weight-loading pass (docs/methods.md): start a target model from a weaker model's
// token embedding. `train --init-embedding-from FILE` runs it from the Trainer's constructor
// (experiments/training/model_factory.cpp); `tapegrok transfer` (experiments/cli/transfer_command.h)
// trains the weak model first. The pass knows parameter tables and files, not the trainer.
#pragma once

#include <string>

#include "engine/parameters.h"
#include "engine/random.h"
#include "experiments/training/train_config.h"

namespace tg {

struct TransferOptions {
  // std of B's entries, drawn N(0, init_scale^2); 0: PyTorch's default for nn.Linear(d_W, d_T) (the layer B
  // stands for), U(-1/sqrt(d_W), 1/sqrt(d_W)).
  double init_scale = 0.0;
  // When set, the weak checkpoint's own run config (if it has one) is compared with this one: a weak model
  // trained on the same task but another split has seen this run's test examples, which is an error.
  const TrainConfig* expected_config = nullptr;
};

struct TransferInfo {
  std::string mode;         // "factorised" (A = E_W, B random) or "direct" (token_embeddings.weight = E_W)
  std::string source;       // the tensor(s) E_W came from
  std::int64_t vocab = 0, weak_dim = 0, target_dim = 0;
};

// The weight-loading pass of GrokTransfer over a target's parameter table. The weak model's embedding
// E_W [V, d_W] is the file's token_embeddings.weight (or token_embeddings.A * token_embeddings.B when the
// weak model was itself factorised). Then
//   the table has token_embeddings.A [V, r]:      r must equal d_W; A = E_W exactly, B redrawn from rng
//   the table has token_embeddings.weight [V, d]: d must equal d_W; copied directly (the "direct copy")
// Everything (tensor present, 2-D, dtype, vocabulary size, rank / dimension, split) is checked before
// anything changes; errors name the file and the tensor.
TransferInfo transfer_embedding(const std::string& path, const ParameterTable& params, Rng& rng,
                                const TransferOptions& options = {});

}  // namespace tg

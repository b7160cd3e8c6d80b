// GrokTransfer (papers.md section 2): train a weak model, then start the target from its embedding.
//
//   tapegrok transfer --task a+b --modulus 113 --weak-stop-at-test-acc 0.3 --weak-steps 3000
//                     --model fnn --layers 3 --width 512 --embed-dim 128 --lr 5e-3 --weight-decay 3 ...
//   (one command line)
//     1. trains the weak model (default: fnn, embedding 4, width 16, 2 layers, pair layout) until its test
//        accuracy reaches --weak-stop-at-test-acc or --weak-steps, whichever comes first;
//        its checkpoint is RUN/weak/checkpoint.safetensors
//     2. trains the target with --init-embedding-from that checkpoint: token embedding E_T = A B with
//        A [V, d_W] = E_W exactly and B [d_W, d_T] random (--transfer-init-scale), both trainable
//     3. prints and writes RUN/transfer.json: weak / target / total wall time, steps and epochs to 95% test
//        accuracy, and the Time Gap (first evaluation with test acc >= 95% minus first with train acc >= 95%)
//
// The embedding pass itself (transfer_embedding) is what `train --init-embedding-from FILE` runs too
// (experiments/model_factory.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/parameters.h"
#include "engine/random.h"
#include "experiments/commands.h"
#include "experiments/train_config.h"
#include "experiments/trainer.h"

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

// ---- the `tapegrok transfer` subcommand

struct TransferRun {
  TrainConfig weak, target;          // target.init_embedding_from is set by run_transfer
  std::string run_dir = "runs/transfer";  // weak run in RUN/weak, target in RUN/target
  std::string weak_checkpoint;       // non-empty: skip step 1 and transfer from this file
  bool direct_copy = false;          // target rank 0 (its embedding must have d_W columns)
};

struct TransferResult {
  RunProgress weak, target;
  double weak_seconds = 0, target_seconds = 0, total_seconds = 0;  // wall time incl. set-up and evaluation
  double target_batches_per_epoch = 1, weak_batches_per_epoch = 1;
  TransferInfo transfer;
  nlohmann::json to_json() const;
};

TransferResult run_transfer(TransferRun run);

ExtraCommand register_transfer_command(CLI::App& app);

}  // namespace tg

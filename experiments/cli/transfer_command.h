// GrokTransfer (docs/methods.md): train a weak model, then start the target from its embedding.
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
// The embedding pass itself is experiments/training/embedding_transfer.h.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "experiments/cli/commands.h"
#include "experiments/training/embedding_transfer.h"
#include "experiments/training/train_config.h"
#include "experiments/training/trainer.h"

namespace tg {

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

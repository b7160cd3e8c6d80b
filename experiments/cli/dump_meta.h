// `tapegrok dump-meta`: one NeuralGrok meta-gradient and everything that defines it, in a safetensors
// file, for verification against other frameworks (test/pytorch/check_meta.py reads it).
#pragma once

#include <string>

#include "experiments/cli/commands.h"
#include "experiments/training/train_config.h"

namespace tg {

struct MetaDumpOptions {
  std::string meta_grad = "unrolled";  // lookahead | unrolled
  std::int64_t steps = 1;              // K inner steps
  std::string inner_optimizer = "sgd"; // sgd | adam (betas from the config, eps 1e-8)
  double lr = 1e-3;
  std::int64_t batch = 32;
  std::string out;
};

// The computation, with no clipping, warm-up or weight decay:
//   theta_0 = the initial parameters; for k = 1..K, batch k = training examples [(k-1)N, kN):
//     unrolled:   g_k = grad L(theta_{k-1}; batch k), theta_k = inner_opt(theta_{k-1}, G_phi(g_k), lr),
//                 outer_loss = L_outer(theta_K), metagrad = d outer_loss / d phi through all K steps.
//     lookahead:  K-1 such steps (not differentiated), then with g_K held constant
//                 theta' = theta_{K-1} - lr G_phi(g_K), outer_loss = L_outer(theta'), metagrad = d/dphi.
// Writes the model parameters (PyTorch names), amp.mlp.*, inner_inputs.{k}/inner_targets.{k} (k from
// 0), outer_inputs/outer_targets, outer_loss [1] and metagrad.amp.mlp.*; the options and config go
// in the metadata.
void dump_meta(const TrainConfig& config, const MetaDumpOptions& options);

// The `tapegrok dump-meta` subcommand.
ExtraCommand register_dump_meta_command(CLI::App& app);

}  // namespace tg

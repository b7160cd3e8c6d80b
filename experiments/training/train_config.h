// Every setting of a training run. Written beside the run's results (config.json) and into its
// checkpoints, so a run can be reproduced or resumed from its files alone.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "models/transformer.h"

namespace tg {

// The seed a run's train/test split comes from: `split_seed` when >= 0, else the run seed.
inline std::uint64_t split_seed_of(std::uint64_t seed, std::int64_t split_seed) {
  return split_seed >= 0 ? static_cast<std::uint64_t>(split_seed) : seed;
}

struct TrainConfig {
  // task and data
  std::string task = "a+b";
  std::int64_t modulus = 0;  // 0: the task's default (97, or 7 for a*c+b*d-e)
  std::string layout = "sequence";
  double train_fraction = 0.5;
  double outer_fraction = 0.0;  // held out of the training part (NeuralGrok's D_outer)
  std::uint64_t seed = 0;       // split, initialisation and batch order all derive from it
  std::int64_t split_seed = -1; // >= 0: the split's own seed instead (-1: `seed`), to vary the split and
                                // the initialisation apart

  // model
  std::string model = "transformer";  // transformer | fnn
  std::int64_t layers = 2, width = 128, heads = 4;  // layers and width serve both models
  std::string block = "reference";
  std::int64_t embed_dim = 0;          // fnn: token embedding size (0: the width)
  bool fnn_bias = false;               // fnn: biases in the hidden layers
  std::int64_t embedding_rank = 0;     // > 0: factorised token embedding A [V, r] * B [r, d] (GrokTransfer)

  // weight loading (GrokTransfer)
  std::string init_embedding_from;     // a weak model's checkpoint whose embedding initialises A
  double transfer_init_scale = 0.0;    // std of B's entries (0: PyTorch's default for the layer)
  bool freeze_embedding_a = false;     // keep A fixed at the transferred embedding

  // loss and gradient method
  std::string loss = "cross-entropy";  // cross-entropy | stablemax (StableMax cross-entropy)
  std::string method = "standard";     // experiments/methods/method_factory.cpp lists them
  double grokfast_alpha = 0.98;        // EMA decay
  double grokfast_lambda = 0.0;        // amplification; 0: the method's default (EMA 2, MA 5)
  std::int64_t grokfast_window = 100;  // MA window
  std::string amp_hidden = "128,128";  // NeuralGrok amplifier hidden sizes
  double amp_c = 1.0;                  // g' = c (p g) / ||p g||
  double amp_lr = 1e-4, amp_weight_decay = 1e-3;
  std::int64_t meta_every = 4;         // T: inner steps per amplifier update
  std::string meta_grad = "lookahead"; // lookahead (the official code) | unrolled (exact, through T steps)
  std::string amp_from;                // start from this amplifier file (safetensors)
  bool amp_frozen = false;             // never update the amplifier

  // optimisation
  std::string optimizer = "adam";  // adam (coupled L2 decay, torch.optim.Adam) | adamw | sgd
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.98, eps = 1e-8, weight_decay = 1e-3, momentum = 0.9;
  std::int64_t warmup_steps = 10;
  std::int64_t batch_size = 512;
  std::int64_t max_steps = 10000;
  double clip_grad_norm = 0.0;   // 0: off
  double grad_normalize = 0.0;   // c of g' = c g / ||g|| per tensor; 0: off
  // Sync-free steps: the step's statistics stay on the device until they are logged, and on a GPU the
  // whole step is captured once as a CUDA graph and replayed (experiments/training/trainer.h). Same results.
  bool cuda_graph = false;

  // evaluation, output
  std::int64_t eval_every = 0;        // steps; 0: once per epoch
  double stop_at_test_acc = 0.0;      // end the run once test accuracy reaches this; 0: never
  std::int64_t checkpoint_every = 0;  // steps; 0: only at the end
  bool keep_checkpoints = false;      // also keep each as checkpoint_step<N>.safetensors (progress measures)
  std::string device = "auto";
  std::string dtype = "f32";          // f64: CPU only, for verification
  std::string run_dir = "runs/default";
  bool progress = true;               // a live progress line on a terminal

  std::int64_t resolved_modulus() const;
  std::uint64_t resolved_split_seed() const { return split_seed_of(seed, split_seed); }
  TransformerConfig model_config(std::int64_t vocab, std::int64_t seq_len) const;
  void validate() const;  // throws naming the first bad setting
};

nlohmann::json to_json(const TrainConfig& c);
TrainConfig train_config_from_json(const nlohmann::json& j);  // unknown keys are an error

}  // namespace tg

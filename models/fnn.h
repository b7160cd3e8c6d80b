// The fully-connected network of GrokTransfer (weak model and FNN target).
//
//   h_0 = concat(token_embeddings[ids[:, 0]], ..., token_embeddings[ids[:, S-1]])   [B, S*e]
//   h_i = relu(layers.{i-1}(h_{i-1}))                  for i = 1 .. L-1            [B, width]
//   logits = head(h_{L-1})                                                          [B, V]
//
// "L layers" counts the Linear layers (weight matrices) after the embedding, as the paper's
// "two-layer network" of width 16 (one hidden ReLU layer): L-1 hidden Linear+ReLU layers of the
// given width, then the output layer. So
//   weak model   (L = 2, e = 4,   width 16):   2*4  -> 16  -> V
//   FNN target   (L = 3, e = 128, width 512):  256 -> 512 -> 512 -> V    (no biases)
// L = 1 is a linear model on the concatenated embeddings.
//
// Parameters (PyTorch state-dict names of the equivalent module):
//   token_embeddings.weight [V, e]          (or token_embeddings.A [V, r], token_embeddings.B [r, e];
//                                            models/token_embedding.h)
//   layers.{i}.weight [width, in_i], layers.{i}.bias [width] (bias only with `bias`), i = 0 .. L-2
//   head.weight [V, width or S*e]           the output layer never has a bias
// i.e. nn.Embedding(V, e); nn.Sequential(nn.Linear(S*e, width, bias), nn.ReLU(), ...) as `layers`
// (ReLUs not counted in the indices: layers.{i} is the i-th Linear); nn.Linear(width, V, bias=False).
// Initialisation is PyTorch's default: embedding N(0, 1); Linear weight and bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
#pragma once

#include "models/model.h"

namespace tg {

struct FnnConfig {
  std::int64_t vocab = 113;
  std::int64_t seq_len = 2;    // operands per example (the pair layout: 2)
  std::int64_t embed_dim = 4;  // e
  std::int64_t width = 16;
  std::int64_t layers = 2;     // L: Linear layers after the embedding, the output layer included
  bool bias = false;           // biases in the hidden layers
  std::int64_t embedding_rank = 0;  // > 0: factorised token embedding A [V, r] B [r, e]
};

class Fnn final : public Model {
 public:
  explicit Fnn(FnnConfig config);  // validates the config

  const char* name() const override { return "fnn"; }
  const FnnConfig& config() const { return config_; }
  std::vector<ParameterSpec> parameter_specs() const override;
  void initialize(const ParameterTable& params, Rng& rng) const override;
  // ids: i32 [B, S] -> logits [B, V]; params in parameter_specs() order.
  Tensor forward(const TensorList& params, const Tensor& ids) const override;

 private:
  FnnConfig config_;
};

}  // namespace tg

// The decoder-only Transformer of the grokking papers (NeuralGrok's reference code):
//   x = token_embeddings[ids] + position_embeddings[0..S)
//       (embedding_rank r > 0: the token table is token_embeddings.A [V, r] * token_embeddings.B [r, d],
//        GrokTransfer's factorised embedding; models/token_embedding.h)
//   per layer, block "reference" (as published):  x = ln_1(x); x = x + attn(x); x = x + mlp(ln_2(x))
//              block "prenorm":                   x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
//   logits = head(ln_f(x[:, S-1]))         only the answer position is ever scored, so the last layer's
//                                          out-projection, ln_2 and MLP run on that position alone
// attn: causal multi-head self-attention with a packed in-projection (nn.MultiheadAttention);
// mlp: Linear(d, 4d), exact GELU, Linear(4d, d). Parameter names are the PyTorch state-dict names,
// so weights move between tapegrok and the PyTorch reference model unchanged.
#pragma once

#include <string>
#include <vector>

#include "models/model.h"

namespace tg {

enum class BlockVariant { reference, prenorm };
BlockVariant parse_block_variant(const std::string& name);  // "reference" | "prenorm"
const char* block_variant_name(BlockVariant v);

struct TransformerConfig {
  std::int64_t vocab = 99;
  std::int64_t seq_len = 4;
  std::int64_t width = 128;
  std::int64_t heads = 4;
  std::int64_t layers = 2;
  std::int64_t mlp_ratio = 4;
  BlockVariant block = BlockVariant::reference;
  double ln_eps = 1e-5;
  std::int64_t embedding_rank = 0;  // > 0: factorised token embedding A [V, r] B [r, width]
};

class Transformer final : public Model {
 public:
  explicit Transformer(TransformerConfig config);  // validates the config

  const char* name() const override { return "transformer"; }
  const TransformerConfig& config() const { return config_; }
  std::vector<ParameterSpec> parameter_specs() const override;

  // PyTorch's default initialisation for each layer type (see transformer.cpp), drawn from rng.
  void initialize(const ParameterTable& params, Rng& rng) const override;

  // ids: i32 [B, S] -> logits [B, V] at the last position. `params` in parameter_specs() order: the
  // table's leaves for training, or any tensors of those shapes (e.g. parameters after a
  // differentiable optimizer step, when differentiating through training).
  Tensor forward(const TensorList& params, const Tensor& ids) const override;

  // The same forward pass, also handing out what analysis looks at (the Fourier analysis of the MLP
  // neurons): per layer, the MLP's hidden activations after GELU, [B, S, mlp_ratio * d].
  struct Activations {
    TensorList mlp_hidden;
  };
  Tensor forward(const TensorList& params, const Tensor& ids, Activations* capture) const;

 private:
  TransformerConfig config_;
};

}  // namespace tg

#include "models/transformer.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "engine/ops.h"
#include "models/token_embedding.h"

namespace tg {

BlockVariant parse_block_variant(const std::string& name) {
  if (name == "reference") return BlockVariant::reference;
  if (name == "prenorm") return BlockVariant::prenorm;
  throw Error(fmt::format("block variant '{}': expected reference or prenorm", name));
}

const char* block_variant_name(BlockVariant v) { return v == BlockVariant::reference ? "reference" : "prenorm"; }

Transformer::Transformer(TransformerConfig config) : config_(config) {
  const auto& c = config_;
  TG_CHECK(c.vocab >= 2, "transformer: vocabulary size must be at least 2, got {}", c.vocab);
  TG_CHECK(c.seq_len >= 1, "transformer: sequence length must be at least 1, got {}", c.seq_len);
  TG_CHECK(c.width >= 1 && c.heads >= 1 && c.width % c.heads == 0,
           "transformer: width {} must be a positive multiple of heads {}", c.width, c.heads);
  TG_CHECK(c.layers >= 0, "transformer: layers must be >= 0, got {}", c.layers);
  TG_CHECK(c.mlp_ratio >= 1, "transformer: mlp ratio must be >= 1, got {}", c.mlp_ratio);
  TG_CHECK(c.embedding_rank >= 0, "transformer: embedding rank must be >= 0, got {}", c.embedding_rank);
}

// Per layer, in this order (the index arithmetic in forward() relies on it).
namespace {
enum LayerParam : std::size_t {
  kLn1Weight, kLn1Bias, kLn2Weight, kLn2Bias, kInProjWeight, kInProjBias, kOutProjWeight, kOutProjBias,
  kMlp0Weight, kMlp0Bias, kMlp2Weight, kMlp2Bias, kPerLayer
};
// The token embedding comes first: one tensor, or two (A, B) when factorised.
constexpr std::size_t kTokenEmbeddings = 0;
}  // namespace

std::vector<ParameterSpec> Transformer::parameter_specs() const {
  const std::int64_t d = config_.width, v = config_.vocab, h = config_.mlp_ratio * d;
  std::vector<ParameterSpec> s = token_embedding_specs(v, d, config_.embedding_rank);
  s.push_back({"position_embeddings.weight", {config_.seq_len, d}});
  for (std::int64_t i = 0; i < config_.layers; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    s.push_back({p + "ln_1.weight", {d}});
    s.push_back({p + "ln_1.bias", {d}});
    s.push_back({p + "ln_2.weight", {d}});
    s.push_back({p + "ln_2.bias", {d}});
    s.push_back({p + "attn.in_proj_weight", {3 * d, d}});
    s.push_back({p + "attn.in_proj_bias", {3 * d}});
    s.push_back({p + "attn.out_proj.weight", {d, d}});
    s.push_back({p + "attn.out_proj.bias", {d}});
    s.push_back({p + "mlp.0.weight", {h, d}});
    s.push_back({p + "mlp.0.bias", {h}});
    s.push_back({p + "mlp.2.weight", {d, h}});
    s.push_back({p + "mlp.2.bias", {d}});
  }
  s.push_back({"ln_f.weight", {d}});
  s.push_back({"ln_f.bias", {d}});
  s.push_back({"head.weight", {v, d}});
  return s;
}

void Transformer::initialize(const ParameterTable& params, Rng& rng) const {
  TG_CHECK(params.size() == parameter_specs().size(), "transformer: parameter table has {} tensors, expected {}",
           params.size(), parameter_specs().size());
  NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params.name(i);
    const Tensor& p = params[i];
    const Shape& s = p.shape();
    auto ends_with = [&](const char* suffix) { return name.size() >= std::strlen(suffix) && name.ends_with(suffix); };
    if (initialize_token_embedding(name, p, rng)) continue;  // token_embeddings.{weight | A, B}
    Tensor init;
    if (ends_with("embeddings.weight")) {
      init = normal_tensor(rng, s, 0.0, 1.0, p.dtype());  // nn.Embedding: N(0, 1)
    } else if (ends_with("ln_1.weight") || ends_with("ln_2.weight") || ends_with("ln_f.weight")) {
      init = Tensor::full(s, 1.0, p.dtype());  // nn.LayerNorm: weight 1, bias 0
    } else if (ends_with("in_proj_weight")) {
      const double bound = std::sqrt(6.0 / static_cast<double>(s[0] + s[1]));  // xavier_uniform_
      init = uniform_tensor(rng, s, -bound, bound, p.dtype());
    } else if (ends_with("in_proj_bias") || ends_with("out_proj.bias") || ends_with("ln_1.bias") ||
               ends_with("ln_2.bias") || ends_with("ln_f.bias")) {
      init = Tensor::zeros(s, p.dtype());  // nn.MultiheadAttention zeroes both projection biases
    } else if (s.size() == 2) {
      // nn.Linear weight: kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
      const double bound = 1.0 / std::sqrt(static_cast<double>(s[1]));
      init = uniform_tensor(rng, s, -bound, bound, p.dtype());
    } else {
      // nn.Linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the matching weight (just before it).
      const Shape& w = params[i - 1].shape();
      const double bound = 1.0 / std::sqrt(static_cast<double>(w[1]));
      init = uniform_tensor(rng, s, -bound, bound, p.dtype());
    }
    Tensor dst = p;
    dst.copy_from_(init);
  }
}

Tensor Transformer::forward(const TensorList& p, const Tensor& ids) const { return forward(p, ids, nullptr); }

Tensor Transformer::forward(const TensorList& p, const Tensor& ids, Activations* capture) const {
  const auto& c = config_;
  // After the token embedding (1 or 2 tensors): position embeddings, then the layers.
  const std::size_t position_embeddings = token_embedding_param_count(c.embedding_rank);
  const std::size_t first_layer = position_embeddings + 1;
  TG_CHECK(p.size() == first_layer + kPerLayer * static_cast<std::size_t>(c.layers) + 3,
           "transformer: forward got {} parameter tensors, expected {}", p.size(), parameter_specs().size());
  TG_CHECK(ids.dtype() == DType::i32 && ids.dim() == 2 && ids.size(1) == c.seq_len,
           "transformer: ids must be i32 [B, {}], got {}", c.seq_len, ids.str());
  const std::int64_t batch = ids.size(0), s = c.seq_len, d = c.width;

  // [B, S, d] + [S, d] (broadcast over the batch)
  const Tensor table = token_embedding_table(p, kTokenEmbeddings, c.embedding_rank);  // [V, d]
  Tensor x = add(embedding(ids, table), p[position_embeddings]);
  // Each residual add is fused into the LayerNorm that follows it (add_layernorm): the stream x and
  // the branch output not yet added to it (`pending`, undefined when there is none).
  Tensor pending;
  auto add_pending_and_norm = [&](const Tensor& stream, const Tensor& gamma, const Tensor& beta,
                                  bool sum_is_used = true) {
    if (!pending.defined()) return AddLayerNorm{stream, layernorm(stream, gamma, beta, c.ln_eps)};
    return add_layernorm(stream, pending, gamma, beta, c.ln_eps, sum_is_used);
  };
  // Only the answer position is scored, so the last layer's work after attention (out-projection, ln_2,
  // MLP) runs on that position alone: its keys and values still come from every position. Each row of
  // those products is computed exactly as in the full pass, so the logits are the same numbers. The
  // capturing pass (analysis) keeps every position.
  const bool prune_last_layer = capture == nullptr;
  auto last_position = [&](const Tensor& t) { return reshape(slice(t, 1, s - 1, 1), {batch, d}); };  // [B, d]
  for (std::int64_t layer = 0; layer < c.layers; ++layer) {
    const Tensor* w = &p[first_layer + kPerLayer * static_cast<std::size_t>(layer)];
    const bool answer_only = prune_last_layer && layer == c.layers - 1;
    auto attention = [&](const Tensor& h) {  // [B, S, d] -> [B, S, d], or [B, d] for answer_only
      Tensor qkv = linear(h, w[kInProjWeight], w[kInProjBias]);  // [B, S, 3d]
      Tensor heads = causal_self_attention(qkv, c.heads);           // [B, S, d]
      if (answer_only) heads = last_position(heads);
      return linear(heads, w[kOutProjWeight], w[kOutProjBias]);
    };
    auto mlp = [&](const Tensor& h) {  // [..., d] -> [..., 4d] -> [..., d]; the first bias fused into GELU
      const Tensor hidden = bias_gelu(linear(h, w[kMlp0Weight]), w[kMlp0Bias]);
      if (capture != nullptr) capture->mlp_hidden.push_back(hidden);
      return linear(hidden, w[kMlp2Weight], w[kMlp2Bias]);
    };
    // reference: the residual carries the normalised x (ln_1's output); prenorm: the un-normalised sum.
    const bool reference = c.block == BlockVariant::reference;
    const AddLayerNorm ln1 = add_pending_and_norm(x, w[kLn1Weight], w[kLn1Bias], !reference);
    x = reference ? ln1.normed : ln1.sum;
    pending = attention(ln1.normed);
    if (answer_only) x = last_position(x);
    const AddLayerNorm ln2 = add_pending_and_norm(x, w[kLn2Weight], w[kLn2Bias]);
    x = ln2.sum;
    pending = mlp(ln2.normed);
  }
  const std::size_t f = first_layer + kPerLayer * static_cast<std::size_t>(c.layers);
  // Only the answer position reaches the head: slice before the last residual add and ln_f (already
  // done when the last layer ran on the answer position alone).
  if (x.dim() == 3) {
    x = last_position(x);
    if (pending.defined()) pending = last_position(pending);
  }
  return linear(add_pending_and_norm(x, p[f], p[f + 1], false).normed, p[f + 2]);  // [B, V]
}

}  // namespace tg

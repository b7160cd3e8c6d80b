#include "models/fnn.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "engine/ops.h"
#include "models/token_embedding.h"

namespace tg {

Fnn::Fnn(FnnConfig config) : config_(config) {
  const auto& c = config_;
  TG_CHECK(c.vocab >= 2, "fnn: vocabulary size must be at least 2, got {}", c.vocab);
  TG_CHECK(c.seq_len >= 1, "fnn: sequence length must be at least 1, got {}", c.seq_len);
  TG_CHECK(c.embed_dim >= 1, "fnn: embedding dimension must be at least 1, got {}", c.embed_dim);
  TG_CHECK(c.width >= 1, "fnn: width must be at least 1, got {}", c.width);
  TG_CHECK(c.layers >= 1, "fnn: layers must be at least 1 (the output layer), got {}", c.layers);
  TG_CHECK(c.embedding_rank >= 0, "fnn: embedding rank must be >= 0, got {}", c.embedding_rank);
}

std::vector<ParameterSpec> Fnn::parameter_specs() const {
  const auto& c = config_;
  std::vector<ParameterSpec> s = token_embedding_specs(c.vocab, c.embed_dim, c.embedding_rank);
  std::int64_t in = c.seq_len * c.embed_dim;
  for (std::int64_t i = 0; i + 1 < c.layers; ++i) {
    s.push_back({fmt::format("layers.{}.weight", i), {c.width, in}});
    if (c.bias) s.push_back({fmt::format("layers.{}.bias", i), {c.width}});
    in = c.width;
  }
  s.push_back({"head.weight", {c.vocab, in}});
  return s;
}

void Fnn::initialize(const ParameterTable& params, Rng& rng) const {
  const auto specs = parameter_specs();
  TG_CHECK(params.size() == specs.size(), "fnn: parameter table has {} tensors, expected {}", params.size(),
           specs.size());
  NoGradGuard no_grad;
  std::int64_t fan_in = 0;  // of the last Linear weight seen (its bias follows it)
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params.name(i);
    TG_CHECK(name == specs[i].name && params[i].shape() == specs[i].shape,
             "fnn: parameter {} of the table is '{}' {}, expected '{}' {}", i, name, shape_str(params[i].shape()),
             specs[i].name, shape_str(specs[i].shape));
    const Tensor& p = params[i];
    if (initialize_token_embedding(name, p, rng)) continue;
    if (p.dim() == 2) fan_in = p.size(1);
    // nn.Linear: kaiming_uniform_(a = sqrt(5)) for the weight = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the
    // same bound for the bias.
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    Tensor dst = p;
    dst.copy_from_(uniform_tensor(rng, p.shape(), -bound, bound, p.dtype()));
  }
}

Tensor Fnn::forward(const TensorList& p, const Tensor& ids) const {
  const auto& c = config_;
  const std::size_t expected = token_embedding_param_count(c.embedding_rank) +
                               static_cast<std::size_t>(c.layers - 1) * (c.bias ? 2 : 1) + 1;
  TG_CHECK(p.size() == expected, "fnn: forward got {} parameter tensors, expected {}", p.size(), expected);
  TG_CHECK(ids.dtype() == DType::i32 && ids.dim() == 2 && ids.size(1) == c.seq_len,
           "fnn: ids must be i32 [B, {}], got {}", c.seq_len, ids.str());
  const std::int64_t batch = ids.size(0);

  const Tensor table = token_embedding_table(p, 0, c.embedding_rank);                 // [V, e]
  Tensor h = reshape(embedding(ids, table), {batch, c.seq_len * c.embed_dim});       // [B, S*e]
  std::size_t at = token_embedding_param_count(c.embedding_rank);
  for (std::int64_t i = 0; i + 1 < c.layers; ++i) {
    const Tensor& w = p[at++];
    const Tensor bias = c.bias ? p[at++] : Tensor();
    h = relu(linear(h, w, bias));  // [B, width]
  }
  return linear(h, p[at]);  // [B, V]
}

}  // namespace tg

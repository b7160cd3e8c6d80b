#include "models/token_embedding.h"

#include <cmath>

#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

std::vector<ParameterSpec> token_embedding_specs(std::int64_t vocab, std::int64_t dim, std::int64_t rank) {
  TG_CHECK(rank >= 0, "token embedding: rank must be >= 0, got {}", rank);
  if (rank == 0) return {{kTokenEmbeddingWeight, {vocab, dim}}};
  return {{kTokenEmbeddingA, {vocab, rank}}, {kTokenEmbeddingB, {rank, dim}}};
}

std::size_t token_embedding_param_count(std::int64_t rank) { return rank > 0 ? 2 : 1; }

Tensor token_embedding_table(const TensorList& p, std::size_t first, std::int64_t rank) {
  if (rank == 0) return p[first];
  return matmul(p[first], p[first + 1]);  // [V, r] x [r, d] -> [V, d]; gradients reach A and B
}

double factor_b_default_bound(std::int64_t rank) { return 1.0 / std::sqrt(static_cast<double>(rank)); }

bool initialize_token_embedding(const std::string& name, const Tensor& param, Rng& rng) {
  NoGradGuard no_grad;
  const Shape& s = param.shape();
  Tensor init;
  if (name == kTokenEmbeddingWeight || name == kTokenEmbeddingA) {
    init = normal_tensor(rng, s, 0.0, 1.0, param.dtype());  // nn.Embedding: N(0, 1)
  } else if (name == kTokenEmbeddingB) {
    const double bound = factor_b_default_bound(s[0]);  // nn.Linear(r, d): fan_in r
    init = uniform_tensor(rng, s, -bound, bound, param.dtype());
  } else {
    return false;
  }
  Tensor dst = param;
  dst.copy_from_(init);
  return true;
}

}  // namespace tg

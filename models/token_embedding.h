// The token embedding shared by tapegrok's models, plain or factorised (GrokTransfer).
//
//   rank 0:  token_embeddings.weight  [V, d]              table E
//   rank r:  token_embeddings.A       [V, r]              table E = A B, both factors trainable
//            token_embeddings.B       [r, d]
//
// The factorised table is computed with the ordinary differentiable ops, embedding(ids, matmul(A, B)),
// so A and B both get gradients (and second derivatives) without a dedicated kernel. In PyTorch terms
// it is nn.Embedding(V, r) followed by nn.Linear(r, d, bias=False) whose weight is B^T.
//
// Initialisation (PyTorch's defaults for those two layers):
//   token_embeddings.weight, token_embeddings.A:  N(0, 1)                     (nn.Embedding)
//   token_embeddings.B:                           U(-1/sqrt(r), 1/sqrt(r))    (nn.Linear(r, d), fan_in r)
// GrokTransfer's weight-loading pass (experiments/training/model_factory.cpp) then overwrites A with the weak
// model's embedding and redraws B.
#pragma once

#include <string>
#include <vector>

#include "engine/parameters.h"
#include "engine/random.h"

namespace tg {

inline constexpr const char* kTokenEmbeddingWeight = "token_embeddings.weight";
inline constexpr const char* kTokenEmbeddingA = "token_embeddings.A";
inline constexpr const char* kTokenEmbeddingB = "token_embeddings.B";

// The parameter specs of the token embedding (one tensor for rank 0, two otherwise).
std::vector<ParameterSpec> token_embedding_specs(std::int64_t vocab, std::int64_t dim, std::int64_t rank);
std::size_t token_embedding_param_count(std::int64_t rank);

// The [V, d] table from the embedding's parameters p[first] (and p[first + 1] when factorised).
Tensor token_embedding_table(const TensorList& p, std::size_t first, std::int64_t rank);

// If `name` is one of the token-embedding parameters, fills `param` with its default initialisation
// drawn from rng and returns true; returns false (drawing nothing) for any other name.
bool initialize_token_embedding(const std::string& name, const Tensor& param, Rng& rng);

// B's default bound 1/sqrt(r) (PyTorch's nn.Linear(r, d) weight).
double factor_b_default_bound(std::int64_t rank);

}  // namespace tg

// Causal multi-head self-attention as one fused op on the packed projection qkv = x W_in^T + b_in.
// Forward saves the attention probabilities [B, H, T, T] (small for the short sequences of these
// tasks); backward is one fused kernel producing dqkv.
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// dqkv given dy. An op so that the tape can hold it; second order through attention is not provided
// yet and fails loudly.
Tensor attention_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs, std::int64_t n_heads) {
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (dqkv.numel() > 0) backend_of(qkv).attention_backward(dy.contiguous(), qkv, probs, n_heads, dqkv);
  TensorList outputs{dqkv};
  tape().record("attention_backward", {dy, qkv}, outputs, no_backward_rule("attention_backward"));
  return outputs[0];
}

}  // namespace

Tensor causal_self_attention(const Tensor& qkv, std::int64_t n_heads) {
  check_floating("causal_self_attention", qkv, "qkv");
  TG_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "causal_self_attention: qkv must be [B, T, 3C], got {}",
           qkv.str());
  const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
  TG_CHECK(n_heads > 0 && c % n_heads == 0, "causal_self_attention: width {} is not divisible into {} heads", c,
           n_heads);
  const Tensor qc = qkv.contiguous();
  Tensor y = Tensor::empty({b, t, c}, qkv.dtype(), qkv.device());
  Tensor probs = Tensor::empty({b, n_heads, t, t}, qkv.dtype(), qkv.device());
  if (y.numel() > 0) backend_of(qkv).attention_forward(qc, n_heads, y, probs);
  TensorList outputs{y};
  tape().record("causal_self_attention", {qkv}, outputs,
                [qc, probs, n_heads](const TensorList& g, const std::vector<bool>&) {
                  return TensorList{attention_backward(g[0], qc, probs, n_heads)};
                });
  return outputs[0];
}

}  // namespace tg

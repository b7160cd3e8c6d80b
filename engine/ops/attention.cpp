// Causal multi-head self-attention as one fused op on the packed projection qkv = x W_in^T + b_in.
// Forward saves the attention probabilities [B, H, T, T] (small for the short sequences of these
// tasks); the first-order backward is one fused kernel producing dqkv.
//
// Second order: when the backward pass is itself recorded (create_graph), the backward rule records
// causal_self_attention_backward, an op whose forward is that same fused kernel and whose backward is
// the fused second-derivative kernel (attention_double_backward). A third derivative is not provided:
// the model's GELU has none either.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

void check_attention_qkv(const char* op, const Tensor& qkv, std::int64_t n_heads) {
  check_floating(op, qkv, "qkv");
  TG_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "{}: qkv must be [B, T, 3C], got {}", op, qkv.str());
  TG_CHECK(n_heads > 0 && qkv.size(2) / 3 % n_heads == 0, "{}: width {} is not divisible into {} heads", op,
           qkv.size(2) / 3, n_heads);
}

// The fused forward on contiguous qkv [B, T, 3C]: y [B, T, C] and the probabilities [B, H, T, T].
struct AttentionForward {
  Tensor y, probs;
};
AttentionForward attention_forward(const Tensor& qc, std::int64_t n_heads) {
  const std::int64_t b = qc.size(0), t = qc.size(1), c = qc.size(2) / 3;
  AttentionForward f{Tensor::empty({b, t, c}, qc.dtype(), qc.device()),
                     Tensor::empty({b, n_heads, t, t}, qc.dtype(), qc.device())};
  if (f.y.numel() > 0) backend_of(qc).attention_forward(qc, n_heads, f.y, f.probs);
  return f;
}

// dqkv from the fused kernel, recorded when grad mode is on. qc: qkv contiguous; probs: its saved
// attention probabilities.
Tensor attention_backward_op(const Tensor& dy, const Tensor& qkv, const Tensor& qc, const Tensor& probs,
                             std::int64_t n_heads) {
  const Tensor dyc = dy.contiguous();
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (dqkv.numel() > 0) backend_of(qkv).attention_backward(dyc, qc, probs, n_heads, dqkv);
  TensorList outputs{dqkv};
  tape().record("causal_self_attention_backward", {dy, qkv}, outputs,
                [dyc, qc, probs, n_heads](const TensorList& g, const std::vector<bool>&) {
                  if (grad_mode_enabled()) return no_backward_rule("causal_self_attention_backward")(g, {});
                  Tensor gqkv = Tensor::empty(qc.shape(), qc.dtype(), qc.device());
                  Tensor gdy = Tensor::empty(dyc.shape(), dyc.dtype(), dyc.device());
                  if (gqkv.numel() > 0) {
                    backend_of(qc).attention_double_backward(dyc, qc, probs, g[0].contiguous(), n_heads, gqkv, gdy);
                  }
                  return TensorList{gdy, gqkv};
                });
  return outputs[0];
}

}  // namespace

Tensor causal_self_attention(const Tensor& qkv, std::int64_t n_heads) {
  check_attention_qkv("causal_self_attention", qkv, n_heads);
  const Tensor qc = qkv.contiguous();
  const AttentionForward forward = attention_forward(qc, n_heads);
  const Tensor probs = forward.probs;
  TensorList outputs{forward.y};
  tape().record("causal_self_attention", {qkv}, outputs,
                [qkv, qc, probs, n_heads](const TensorList& g, const std::vector<bool>&) {
                  return TensorList{attention_backward_op(g[0], qkv, qc, probs, n_heads)};
                });
  return outputs[0];
}

Tensor causal_self_attention_backward(const Tensor& dy, const Tensor& qkv, std::int64_t n_heads) {
  check_attention_qkv("causal_self_attention_backward", qkv, n_heads);
  check_floating("causal_self_attention_backward", dy, "dy");
  check_same("causal_self_attention_backward", {{&dy, "dy"}, {&qkv, "qkv"}});
  const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
  TG_CHECK(dy.shape() == Shape({b, t, c}), "causal_self_attention_backward: dy {} must be [{}, {}, {}] for qkv {}",
           dy.str(), b, t, c, qkv.str());
  // The probabilities the forward would have saved (a forward pass; its y is not needed).
  const Tensor qc = qkv.contiguous();
  return attention_backward_op(dy, qkv, qc, attention_forward(qc, n_heads).probs, n_heads);
}

}  // namespace tg

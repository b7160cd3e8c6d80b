// Causal multi-head self-attention as one fused op on the packed projection qkv = x W_in^T + b_in.
// Forward saves the attention probabilities [B, H, T, T] (small for the short sequences of these
// tasks); the first-order backward is one fused kernel producing dqkv.
//
// Second order: when the backward pass is itself recorded (create_graph), the backward rule computes
// dqkv from differentiable primitives (batched matmuls, softmax, its backward), recomputing the
// probabilities from qkv, so derivatives of any order flow through the tape.
#include <cmath>
#include <limits>

#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// The fused first-order backward (not recorded). qkv contiguous.
Tensor attention_backward_fused(const Tensor& dy, const Tensor& qkv, const Tensor& probs, std::int64_t n_heads) {
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (dqkv.numel() > 0) backend_of(qkv).attention_backward(dy.contiguous(), qkv, probs, n_heads, dqkv);
  return dqkv;
}

// The same gradient from recorded primitives. With P = softmax(q k^T / sqrt(D) + causal mask):
//   dV = P^T dY,  dP = dY V^T,  dS = softmax_backward(P, dP) / sqrt(D),  dQ = dS K,  dK = dS^T Q.
Tensor attention_backward_composite(const Tensor& dy, const Tensor& qkv, std::int64_t n_heads) {
  const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3, d = c / n_heads;
  const double scale_by = 1.0 / std::sqrt(static_cast<double>(d));
  auto heads = [&](const Tensor& x) { return transpose(reshape(x, {b, t, n_heads, d}), 1, 2); };  // [B, H, T, D]
  auto unheads = [&](const Tensor& x) { return reshape(transpose(x, 1, 2), {b, t, c}); };         // [B, T, C]
  const Tensor q = heads(slice(qkv, 2, 0, c));
  const Tensor k = heads(slice(qkv, 2, c, c));
  const Tensor v = heads(slice(qkv, 2, 2 * c, c));
  std::vector<double> mask_values(static_cast<std::size_t>(t * t), 0.0);
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = i + 1; j < t; ++j)
      mask_values[static_cast<std::size_t>(i * t + j)] = -std::numeric_limits<double>::infinity();
  const Tensor mask = Tensor::from_vector(mask_values, {t, t}).to(qkv.dtype()).to(qkv.device());
  const Tensor p = softmax(add(scale(matmul(q, k, false, true), scale_by), mask));  // [B, H, T, T]
  const Tensor dy_heads = heads(dy);
  const Tensor dv = matmul(p, dy_heads, true, false);
  const Tensor ds = scale(softmax_backward(p, matmul(dy_heads, v, false, true)), scale_by);
  const Tensor dq = matmul(ds, k);
  const Tensor dk = matmul(ds, q, true, false);
  return concat({unheads(dq), unheads(dk), unheads(dv)}, 2);
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
                [qkv, qc, probs, n_heads](const TensorList& g, const std::vector<bool>&) {
                  if (grad_mode_enabled()) return TensorList{attention_backward_composite(g[0], qkv, n_heads)};
                  return TensorList{attention_backward_fused(g[0], qc, probs, n_heads)};
                });
  return outputs[0];
}

}  // namespace tg

// The differentiable ops. Each one validates its inputs (an error names the op and the shapes),
// runs the kernel of the inputs' device (engine/backend.h) and records itself on the tape
// (engine/tape.h) with a backward rule written in these same ops.
//
// Broadcasting follows NumPy: shapes are aligned at the last dimension and size-1 dimensions stretch.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tape.h"
#include "engine/tensor.h"

namespace tg {

// ---- matrix products (engine/ops/matmul.cpp) ----
// a: [..., M, K] (or [..., K, M] with transpose_a), b: [K, N] or [..., K, N] (or transposed), batch
// dimensions equal. A 2-D b is shared by every batch entry (a linear layer on [B, T, C]).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);
// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out]  (y = x W^T + b)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// Floating-point operations (2 M N K per product) that matmul and linear have sent to the backends
// since the program started: benchmarks difference it around a step to get the step's GEMM work.
std::uint64_t matmul_flops_dispatched();

// ---- elementwise (engine/ops/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sign(const Tensor& x);                               // not differentiable (zero gradient)
Tensor scale(const Tensor& x, double alpha);                // alpha * x
Tensor add_scalar(const Tensor& x, double beta);            // x + beta
Tensor affine(const Tensor& x, double alpha, double beta);  // alpha * x + beta
// In place, never recorded (gradient accumulation, optimizers): a += b, same shape.
void add_(const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator*(const Tensor& x, double s) { return scale(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return scale(x, s); }

// ---- activations (engine/ops/activations.cpp) ----
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact: x * Phi(x)
// Fused derivative kernels, ops in their own right so that second order can pass through them.
Tensor relu_backward(const Tensor& x, const Tensor& dy);  // dy * [x > 0]
Tensor gelu_backward(const Tensor& x, const Tensor& dy);  // dy * gelu'(x)
// x: [..., C], bias: [C] -> gelu(x + bias) in one pass: the MLP's first linear layer runs its GEMM
// without bias and this op adds it on the way into the activation.
Tensor bias_gelu(const Tensor& x, const Tensor& bias);

// ---- reductions (engine/ops/reductions.cpp) ----
Tensor sum(const Tensor& x);                                          // all elements -> shape []
Tensor sum(const Tensor& x, std::int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, std::int64_t dim, bool keepdim = false);
Tensor l2_norm(const Tensor& x);                                      // sqrt(sum x^2) -> shape []
Tensor sum_to(const Tensor& x, const Shape& shape);  // sums broadcast dimensions away (broadcast backward)
Tensor expand(const Tensor& x, const Shape& shape);  // broadcast x to shape (a view)
Tensor argmax(const Tensor& x);                      // over the last dim -> i32, not differentiable
// a, b: i32 of one shape -> [] of `dtype`: how many positions agree (exact; not differentiable). A
// step's correct predictions, count_equal(argmax(logits), targets), without a trip to the host.
Tensor count_equal(const Tensor& a, const Tensor& b, DType dtype = DType::f32);

// ---- softmax and loss (engine/ops/softmax.cpp, cross_entropy.cpp, stablemax_cross_entropy.cpp) ----
Tensor softmax(const Tensor& x);  // over the last dimension
Tensor softmax_backward(const Tensor& y, const Tensor& dy);
// logits: [N, V], targets: i32 [N] -> mean over n of -log softmax(logits[n])[targets[n]], shape [].
// One fused log-softmax + cross-entropy kernel; values out of [0, V) are an error.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);
// The same loss with softmax's exp replaced by StableMax's s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0):
// mean over n of -log(s(logits[n, t]) / sum_j s(logits[n, j])), t = targets[n], shape []. One fused
// kernel each way, checked like cross_entropy; differentiable to any order (s'' jumps at 0: x >= 0 counts).
Tensor stablemax_cross_entropy(const Tensor& logits, const Tensor& targets);

// ---- model layers (engine/ops/layernorm.cpp, attention.cpp, embedding.cpp) ----
// x: [..., C], gamma, beta: [C] -> [..., C]
Tensor layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);
// The residual add in front of a LayerNorm as one op: x, residual: [..., C] (same shape) ->
// sum = x + residual and normed = layernorm(sum), one pass forward and one backward. With
// sum_is_used false the caller promises to use only `normed` (sum is then a constant, not an output
// of the op), which spares the backward a zero gradient for it.
struct AddLayerNorm {
  Tensor sum, normed;
};
AddLayerNorm add_layernorm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                           double eps = 1e-5, bool sum_is_used = true);
// LayerNorm's gradients as an op of its own, for gradients of gradients: dx (x's shape), dgamma and
// dbeta ([C]) for the gradient dy of layernorm(x, gamma, beta, eps). Its derivatives are LayerNorm's
// second (one fused kernel); a third derivative is not provided.
struct LayerNormGrads {
  Tensor dx, dgamma, dbeta;
};
LayerNormGrads layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, double eps = 1e-5);
// qkv: [B, T, 3C] -> [B, T, C]: causal multi-head attention, heads of size C / n_heads, scale 1/sqrt(D).
Tensor causal_self_attention(const Tensor& qkv, std::int64_t n_heads);
// dy: [B, T, C], qkv: [B, T, 3C] -> dqkv [B, T, 3C]: causal_self_attention's gradient as an op (its
// recorded backward). Its own backward, attention's second derivative, is one fused kernel; a third
// derivative is not provided.
Tensor causal_self_attention_backward(const Tensor& dy, const Tensor& qkv, std::int64_t n_heads);
// ids: i32 [...], weight: [V, C] -> [..., C]
Tensor embedding(const Tensor& ids, const Tensor& weight);

// ---- segments of a flat buffer ----
// A run of a flat buffer: one parameter tensor's entries [begin, begin + size).
struct Segment {
  std::int64_t begin = 0, size = 0;
};

// ---- ids checked on the host (engine/ops/ids_checked.cpp) ----
// embedding, cross_entropy and stablemax_cross_entropy make sure every id / target is in range by
// copying them to the host: a wait for the device, which a sync-free training step (and a CUDA graph
// capture) must not make. While an IdsCheckedGuard is alive the caller vouches that it checked the
// values on the host before it uploaded them, and those ops skip their copy. Scoped like NoGradGuard
// (single-threaded engine).
class IdsCheckedGuard {
 public:
  IdsCheckedGuard();
  ~IdsCheckedGuard();
  IdsCheckedGuard(const IdsCheckedGuard&) = delete;
  IdsCheckedGuard& operator=(const IdsCheckedGuard&) = delete;

 private:
  bool previous_;
};
bool ids_checked_on_host();

// ---- views and copies (engine/ops/views.cpp) ----
Tensor reshape(const Tensor& x, const Shape& shape);  // one entry may be -1
Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1);  // a strided view
Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length);  // a view
Tensor concat(const TensorList& xs, std::int64_t dim);
Tensor contiguous(const Tensor& x);  // differentiable Tensor::contiguous

}  // namespace tg

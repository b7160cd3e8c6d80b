// CPU kernels on raw arrays: the reference implementations of every op, simple loops written for
// clarity first. T is float or double (instantiated for both). Sums accumulate in double and run in
// a fixed order, so results are deterministic.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "optim/method_kernels.h"  // MlpPath

namespace tg::cpu {

// A strided view as the kernels see it (engine/tensor.h's KernelLayout: merged, at most kMaxDims).
constexpr int kMaxDims = kMaxKernelDims;
using StridedView = KernelLayout;
inline StridedView strided_view(const Tensor& t) { return kernel_layout(t, "cpu kernel"); }

// ---- elementwise (elementwise.cpp) ----
template <class T> void fill(T* out, const StridedView& view, T value);
template <class T> void copy(const T* src, const StridedView& src_view, T* dst, const StridedView& dst_view);
template <class From, class To> void convert(const From* src, To* dst, std::int64_t n);
// out[n] = op(x[n])
template <class T> void unary(UnaryOp op, const T* x, T* out, std::int64_t n, T alpha, T beta);
// dx[n] = dy[n] * act'(x[n])
template <class T> void activation_backward(UnaryOp act, const T* x, const T* dy, T* dx, std::int64_t n);
// x, y, dy, dx: [rows, C]; bias: [C].  y = gelu(x + bias);  dx = dy * gelu'(x + bias)
template <class T> void bias_gelu_forward(const T* x, const T* bias, T* y, std::int64_t rows, std::int64_t c);
template <class T>
void bias_gelu_backward(const T* x, const T* bias, const T* dy, T* dx, std::int64_t rows, std::int64_t c);
// out (contiguous, n elements) = a (op) b; a and b strided views of out's logical shape.
template <class T>
void binary(BinaryOp op, const T* a, const StridedView& av, const T* b, const StridedView& bv, T* out,
            std::int64_t n);

// ---- dense algebra (gemm.cpp) ----
// out[M,N] = alpha * op(a) @ op(b) + beta * out, row-major; `batch` independent products.
template <class T>
void gemm(const T* a, const T* b, T* out, std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
          bool trans_a, bool trans_b, T alpha, T beta);

// ---- reductions (reduce.cpp) ----
// x: [outer, reduce, inner] -> out: [outer, inner]
template <class T>
void reduce_dim(ReduceOp op, const T* x, T* out, std::int64_t outer, std::int64_t reduce, std::int64_t inner);
template <class T> void reduce_all(ReduceOp op, const T* x, T* out, std::int64_t n);
// x: [rows, n] -> out: [rows]
template <class T> void argmax_lastdim(const T* x, std::int32_t* out, std::int64_t rows, std::int64_t n);
// a, b: [n] -> out[0] = the number of i with a[i] == b[i]
template <class T> void count_equal(const std::int32_t* a, const std::int32_t* b, T* out, std::int64_t n);

// ---- flat-buffer passes (optimizer.cpp) ----  all buffers [n]; offsets [segments + 1]
// The updates read g clipped by (clip_norm, max_norm) when clip_norm is not null (Backend's GradClip).
template <class T>
void adam_update(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& step, const T* clip_norm, T max_norm);
template <class T>
void sgd_update(T* p, const T* g, T* buf, std::int64_t n, T lr, T momentum, T weight_decay, bool first_step,
                const T* clip_norm, T max_norm);
// The same with the step's values read from `scalars` (Backend::adam_update_device / sgd_update_device).
template <class T>
void adam_update_device(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamStep& fixed, const T* scalars,
                        const T* clip_norm, T max_norm);
template <class T>
void sgd_update_device(T* p, const T* g, T* buf, std::int64_t n, const T* scalars, T momentum, T weight_decay,
                       const T* clip_norm, T max_norm);
template <class T> void clip_by_norm(T* x, std::int64_t n, T norm, T max_norm);
template <class T>
void segmented_reduce(ReduceOp op, const T* x, const std::int64_t* offsets, std::int64_t segments, T* out);
template <class T> void segmented_scale(T* x, const std::int64_t* offsets, std::int64_t segments, const T* scales);

// ---- softmax (softmax.cpp) ----  x, y, dy, dx: [rows, n]
template <class T> void softmax_forward(const T* x, T* y, std::int64_t rows, std::int64_t n);
template <class T> void softmax_backward(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t n);

// ---- layernorm (layernorm.cpp) ----  x, residual, sum, y, dy, dsum, dx: [rows, C];
// gamma, beta, dgamma, dbeta: [C]; mean, rstd: [rows]
template <class T>
void layernorm_forward(const T* x, const T* gamma, const T* beta, T eps, T* y, T* mean, T* rstd, std::int64_t rows,
                       std::int64_t c);
// sum = x + residual; y = layernorm(sum)
template <class T>
void add_layernorm_forward(const T* x, const T* residual, const T* gamma, const T* beta, T eps, T* sum, T* y, T* mean,
                           T* rstd, std::int64_t rows, std::int64_t c);
// dsum may be null; when given it is added to dx.
template <class T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, const T* dsum, T* dx,
                        T* dgamma, T* dbeta, std::int64_t rows, std::int64_t c);
// Second order: ga [rows, C], gg, gb [C] (gradients of dx, dgamma, dbeta) -> ddy, dx2 [rows, C], dgamma2 [C]
template <class T>
void layernorm_double_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, const T* ga,
                               const T* gg, const T* gb, T* ddy, T* dx2, T* dgamma2, std::int64_t rows,
                               std::int64_t c);

// ---- attention (attention.cpp) ----  qkv, dqkv: [B, T, 3C]; y, dy: [B, T, C]; probs: [B, H, T, T]
template <class T>
void attention_forward(const T* qkv, T* y, T* probs, std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h);
template <class T>
void attention_backward(const T* dy, const T* qkv, const T* probs, T* dqkv, std::int64_t b, std::int64_t t,
                        std::int64_t c, std::int64_t h);
// g, gqkv: [B, T, 3C]; gdy: [B, T, C]
template <class T>
void attention_double_backward(const T* dy, const T* qkv, const T* probs, const T* g, T* gqkv, T* gdy,
                               std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h);

// ---- embedding (embedding.cpp) ----  ids: [N]; weight, dweight: [V, C]; out, dout: [N, C]
template <class T> void embedding_forward(const std::int32_t* ids, const T* weight, T* out, std::int64_t n, std::int64_t c);
template <class T>
void embedding_backward(const std::int32_t* ids, const T* dout, T* dweight, std::int64_t n, std::int64_t vocab,
                        std::int64_t c);

// ---- cross-entropy (cross_entropy.cpp) ----  logits, dlogits: [N, V]; targets, losses, lse: [N]; mean: [1]
template <class T>
void cross_entropy_forward(const T* logits, const std::int32_t* targets, T* losses, T* lse, T* mean, std::int64_t n,
                           std::int64_t v);
template <class T>
void cross_entropy_backward(const T* logits, const std::int32_t* targets, const T* lse, T dloss_times_scale,
                            T* dlogits, std::int64_t n, std::int64_t v);

// ---- StableMax cross-entropy (stablemax_cross_entropy.cpp) ----  logits, dlogits: [N, V]; targets, losses,
// sums: [N]; mean: [1]
template <class T>
void stablemax_cross_entropy_forward(const T* logits, const std::int32_t* targets, T* losses, T* sums, T* mean,
                                     std::int64_t n, std::int64_t v);
template <class T>
void stablemax_cross_entropy_backward(const T* logits, const std::int32_t* targets, const T* sums,
                                      T dloss_times_scale, T* dlogits, std::int64_t n, std::int64_t v);

// ---- NeuralGrok amplifier (neural_amplify.cpp) ----
// A run [begin, begin + size) of a flat buffer.
struct Run {
  std::int64_t begin = 0, size = 0;
};
// The amplifier MLP as the kernels see it: linear layer l maps in[l] -> out[l] features,
// w[l]: [out[l], in[l]], b[l]: [out[l]] (in[0] = 1, out[last] = 1), ReLU between layers.
template <class T> struct Mlp {
  std::vector<const T*> w, b;
  std::vector<std::int64_t> in, out;
};
// How the MLP's scores (and their derivatives) are computed (optim/method_kernels.h): `direct` runs the MLP
// on every entry; `pieces` evaluates it as the exact piecewise-linear function it is
// (amplifier_pieces.h); `automatic` takes the pieces when they cost far fewer multiply-adds.
using tg::MlpPath;
// g, out, scores: [n]; stats: [runs, 3] = (max score, sum exp(score - max), ||p g||) per run.
// See MethodKernels::neural_amplify_forward.
template <class T>
void neural_amplify_forward(const T* g, std::int64_t n, const Mlp<T>& mlp, const std::vector<Run>& runs, double c,
                            T* out, T* scores, T* stats, MlpPath path = MlpPath::automatic);
// dout, g, dg: [n]; dw[l], db[l]: shaped like mlp.w[l], mlp.b[l] (overwritten).
template <class T>
void neural_amplify_backward(const T* dout, const T* g, std::int64_t n, const Mlp<T>& mlp, const std::vector<Run>& runs,
                             double c, const T* scores, const T* stats, T* dg, const std::vector<T*>& dw,
                             const std::vector<T*>& db, MlpPath path = MlpPath::automatic);

// ---- Grokfast filters (grokfast.cpp) ----  all buffers [n]; see MethodKernels::grokfast_ema / grokfast_ma
template <class T> void grokfast_ema(T* g, T* mu, std::int64_t n, T alpha, T lambda, bool first_step);
template <class T>
void grokfast_ma(T* g, T* slot, T* sum, T* comp, std::int64_t n, T lambda, std::int64_t window, bool evict,
                 bool amplify);

}  // namespace tg::cpu

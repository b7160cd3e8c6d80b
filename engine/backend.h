// Backend: the kernels one device provides.
//
// backend_for(device) is the one place that decides which implementation runs an op: the op layer
// (engine/ops/) checks shapes, allocates outputs and then calls backend_for(x.device()).<kernel>.
// Kernels never check user input: they receive tensors the op layer has already validated, with
// every input contiguous unless the comment says otherwise, and outputs freshly allocated.
//
// Implementations: kernels/cpu/cpu_backend.cpp (f32 and f64) and kernels/cuda/cuda_backend.cpp (f32).
// The kernels of particular grokking methods are not here: they are the methods' own (optim/method_kernels.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/allocator.h"
#include "engine/device.h"
#include "engine/tensor.h"

namespace tg {

enum class UnaryOp {
  neg, exp, log, abs, sqrt, square, sign,
  relu, gelu,   // gelu: exact, x * Phi(x) with Phi the normal CDF (erf form)
  gelu_grad2,   // d2 gelu / dx2 = phi(x) * (2 - x^2), phi the normal density
  affine,       // alpha * x + beta
};
const char* unary_op_name(UnaryOp op);

enum class BinaryOp { add, sub, mul, div };
const char* binary_op_name(BinaryOp op);

// abs_entropy: the sum of -|x| ln|x| with 0 ln 0 = 0 (NeuralGrok's AGE / AWE, optim/entropy_metrics.h).
enum class ReduceOp { sum, sum_squares, abs_entropy };

// One Adam step's constants (PyTorch's torch.optim.Adam / AdamW formulas).
struct AdamStep {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * wd; Adam: g += wd * p
  double bias_correction1 = 1.0;        // 1 - beta1^t
  double bias_correction2 = 1.0;        // 1 - beta2^t
};

// What the Adam kernels derive from a step's lr and bias corrections, in double: (lr / bc1, sqrt(bc2),
// 1 - lr wd). adam_update rounds these to the kernel's type; adam_update_device reads the same values,
// rounded by the caller, from a device tensor. One function for both keeps the two paths bit-identical.
constexpr std::int64_t kAdamDeviceScalars = 3;
std::array<double, kAdamDeviceScalars> adam_device_scalars(const AdamStep& step);
// sgd_update_device's scalars: (lr, 1 on the first step else 0).
constexpr std::int64_t kSgdDeviceScalars = 2;

// A global-norm clip fused into an optimizer update: the update reads each gradient as
// g * min(1, max_norm / (norm + 1e-6)) — clip_by_norm's arithmetic, bit for bit — in its own pass, and
// leaves the gradient buffer as it was. norm undefined: no clipping.
struct GradClip {
  Tensor norm;  // one element on the update's device (written there by an earlier kernel)
  double max_norm = 0.0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Allocator& allocator() = 0;
  virtual void synchronize() = 0;

  // ---- memory ----
  virtual void copy_from_host(void* dst, const void* src, std::size_t nbytes) = 0;
  // The same copy without waiting for the device: the bytes are staged first (pinned memory on the
  // GPU), so `src` may be reused as soon as this returns, and the copy runs in stream order with the
  // kernels. For the inputs of a sync-free step; not allowed while a graph is being captured.
  virtual void copy_from_host_async(void* dst, const void* src, std::size_t nbytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, std::size_t nbytes) = 0;
  virtual void fill_bytes(void* dst, unsigned char byte, std::size_t nbytes) = 0;
  virtual void fill(const Tensor& out, double value) = 0;  // out: any strides
  // dst = src elementwise; same shape and device, both may be arbitrary strided views.
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  // dst = src converted between dtypes (same shape, contiguous).
  virtual void convert(const Tensor& src, const Tensor& dst) = 0;

  // ---- dense algebra ----
  // out = alpha * op(a) @ op(b) + beta * out. a: [M,K] ([K,M] when trans_a), b: [K,N] ([N,K] when
  // trans_b), out: [M,N]; or all three with one leading batch dimension of equal size.
  virtual void gemm(const Tensor& a, const Tensor& b, const Tensor& out, bool trans_a, bool trans_b,
                    double alpha, double beta) = 0;

  // ---- elementwise ----
  virtual void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha, double beta) = 0;
  // dx = dy * act'(x) for act in {relu, gelu}; relu'(0) = 0; gelu'(x) = Phi(x) + x * phi(x).
  virtual void activation_backward(UnaryOp act, const Tensor& x, const Tensor& dy, const Tensor& dx) = 0;
  // x, y, dx, dy: [rows, C]; bias: [C]. A linear layer's bias and its GELU in one pass:
  // y = gelu(x + bias);  dx = dy * gelu'(x + bias) (recomputing x + bias instead of saving it).
  virtual void bias_gelu_forward(const Tensor& x, const Tensor& bias, const Tensor& y) = 0;
  virtual void bias_gelu_backward(const Tensor& x, const Tensor& bias, const Tensor& dy, const Tensor& dx) = 0;
  // out = a (op) b. a and b have out's shape but may be broadcast views (stride 0) or strided.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- reductions ----
  // x viewed as [outer, reduce, inner] -> out [outer, inner]; summed in a fixed order.
  virtual void reduce_dim(ReduceOp op, const Tensor& x, const Tensor& out, std::int64_t outer,
                          std::int64_t reduce, std::int64_t inner) = 0;
  // every element of x -> out (one element).
  virtual void reduce_all(ReduceOp op, const Tensor& x, const Tensor& out) = 0;
  // x: [rows, n] -> out i32 [rows], index of the first maximum.
  virtual void argmax_lastdim(const Tensor& x, const Tensor& out) = 0;
  // a, b: i32 [n] -> out (one floating element): how many positions hold equal values, counted exactly.
  virtual void count_equal(const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- flat-buffer passes (optimizers, clipping, per-parameter transforms) ----
  // Over flat buffers of equal length, in place:  g' = g + wd p (Adam) | p *= 1 - lr wd (AdamW);
  // m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
  // Every update takes a GradClip: g is clipped first when clip.norm is defined.
  virtual void adam_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                           const AdamStep& step, const GradClip& clip) = 0;
  // g' = g + wd p;  buf = g' (first step) or momentum buf + g';  p -= lr buf.
  virtual void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, double lr,
                          double momentum, double weight_decay, bool first_step, const GradClip& clip) = 0;
  // The same two updates with their step-dependent values read from `scalars` on the device instead
  // of kernel arguments, so one launch (a captured CUDA graph) serves every step. scalars: a contiguous
  // tensor of param's dtype and device, written before the step: [kAdamDeviceScalars] =
  // adam_device_scalars(step) (`fixed` gives beta1, beta2, eps, weight_decay, decoupled_weight_decay;
  // its lr and bias corrections are not used) or [kSgdDeviceScalars] = (lr, first step). Bit-identical
  // to adam_update / sgd_update given the same step.
  virtual void adam_update_device(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                                  const AdamStep& fixed, const Tensor& scalars, const GradClip& clip) = 0;
  virtual void sgd_update_device(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer,
                                 const Tensor& scalars, double momentum, double weight_decay,
                                 const GradClip& clip) = 0;
  // x *= min(1, max_norm / (norm + 1e-6)), norm a one-element tensor on the device (no host round trip).
  virtual void clip_by_norm(const Tensor& x, const Tensor& norm, double max_norm) = 0;
  // out[s] = reduce(x[offsets[s] : offsets[s+1]]) for every segment s in one pass; x flat, out [segments].
  // Sums accumulate in double (abs_entropy included, with 0 ln 0 = 0).
  virtual void segmented_reduce(ReduceOp op, const Tensor& x, const std::vector<std::int64_t>& offsets,
                                const Tensor& out) = 0;
  // x[offsets[s] : offsets[s+1]] *= scales[s].
  virtual void segmented_scale(const Tensor& x, const std::vector<std::int64_t>& offsets, const Tensor& scales) = 0;

  // ---- fused model kernels ----
  // x, y: [rows, n]. y = softmax over each row.
  virtual void softmax_forward(const Tensor& x, const Tensor& y) = 0;
  // dx = y * (dy - sum_j(dy * y)) per row.
  virtual void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) = 0;

  // x, y: [rows, C]; gamma, beta: [C]; mean, rstd: [rows] (saved for backward).
  virtual void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                                 const Tensor& y, const Tensor& mean, const Tensor& rstd) = 0;
  // The residual add in front of a LayerNorm, one pass: sum = x + residual ([rows, C] each), and y,
  // mean, rstd as layernorm_forward of sum.
  virtual void add_layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                                     const Tensor& beta, double eps, const Tensor& sum, const Tensor& y,
                                     const Tensor& mean, const Tensor& rstd) = 0;
  // dx: [rows, C]; dgamma, dbeta: [C] (overwritten, not accumulated). dsum: undefined, or [rows, C]
  // added to dx — the gradient that reached add_layernorm's sum directly, so the residual stream's two
  // gradients meet in this kernel rather than in a separate add.
  virtual void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                  const Tensor& mean, const Tensor& rstd, const Tensor& dsum, const Tensor& dx,
                                  const Tensor& dgamma, const Tensor& dbeta) = 0;
  // Second order: gdx [rows, C], gdgamma, gdbeta [C], gradients of layernorm_backward's outputs (without
  // dsum), taken back to its inputs: ddy, dx [rows, C] and dgamma [C] (all overwritten).
  virtual void layernorm_double_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma,
                                         const Tensor& mean, const Tensor& rstd, const Tensor& gdx,
                                         const Tensor& gdgamma, const Tensor& gdbeta, const Tensor& ddy,
                                         const Tensor& dx, const Tensor& dgamma) = 0;

  // qkv: [B, T, 3C] (q | k | v along the last dim, each C = H * D split into heads);
  // y: [B, T, C]; probs: [B, H, T, T] causal softmax(q k^T / sqrt(D)), saved for backward.
  virtual void attention_forward(const Tensor& qkv, std::int64_t n_heads, const Tensor& y,
                                 const Tensor& probs) = 0;
  // dqkv: [B, T, 3C] (overwritten).
  virtual void attention_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs,
                                  std::int64_t n_heads, const Tensor& dqkv) = 0;
  // Second order: g [B, T, 3C], a gradient of attention_backward's dqkv, taken back to its inputs:
  // gqkv [B, T, 3C] and gdy [B, T, C] (both overwritten).
  virtual void attention_double_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs,
                                         const Tensor& g, std::int64_t n_heads, const Tensor& gqkv,
                                         const Tensor& gdy) = 0;

  // ids: i32 [N]; weight: [V, C]; out: [N, C]. Ids are range-checked by the op layer.
  virtual void embedding_forward(const Tensor& ids, const Tensor& weight, const Tensor& out) = 0;
  // dweight: [V, C] (overwritten) = sum over n with ids[n] == v of dout[n], in order of n.
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dweight) = 0;

  // logits: [N, V]; targets: i32 [N]; losses, lse: [N]. losses[n] = lse[n] - logits[n, targets[n]];
  // mean (one element) = their mean, in the same kernel: the sum accumulated in double and rounded,
  // then times 1/N rounded to the dtype (reduce_all then affine, as separate kernels would).
  virtual void cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses,
                                     const Tensor& lse, const Tensor& mean) = 0;
  // dlogits[n, j] = (softmax(logits[n])_j - [j == targets[n]]) * dloss * scale, dloss one element.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                      const Tensor& dloss, double scale, const Tensor& dlogits) = 0;

  // StableMax cross-entropy: softmax's exp replaced by s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0).
  // logits: [N, V]; targets: i32 [N]; losses, sums: [N]. sums[n] = sum_j s(logits[n, j]) (summed in
  // double, then rounded); losses[n] = log sums[n] - log s(logits[n, targets[n]]); mean as in
  // cross_entropy_forward.
  virtual void stablemax_cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses,
                                               const Tensor& sums, const Tensor& mean) = 0;
  // dlogits[n, j] = (s'(x) / sums[n] - [j == targets[n]] / (1 + |x|)) * dloss * scale, x = logits[n, j],
  // s'(x) = 1 (x >= 0), 1 / (1 - x)^2 (x < 0); dloss one element.
  virtual void stablemax_cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& sums,
                                                const Tensor& dloss, double scale, const Tensor& dlogits) = 0;

  // ---- CUDA graphs (engine/captured_graph.h is the interface to use) ----
  // begin_capture: until end_capture, work this thread enqueues on the backend's stream is recorded,
  // not run (cudaStreamCaptureModeThreadLocal), and device memory comes from a capture pool that stays
  // the graph's own (engine/allocator.h). Anything that waits for the device (copy_to_host,
  // copy_from_host[_async], synchronize) is an error meanwhile. end_capture instantiates the graph and
  // returns its id (> 0); launch_graph replays it on the stream; destroy_graph waits for the stream,
  // frees the graph and hands its pool back. abort_capture ends a failed capture and drops what it
  // recorded. The CPU backend raises "graph capture needs a CUDA device".
  virtual void begin_capture() = 0;
  virtual std::uint64_t end_capture() = 0;
  virtual void abort_capture() noexcept = 0;
  virtual void launch_graph(std::uint64_t graph) = 0;
  virtual void destroy_graph(std::uint64_t graph) = 0;
};

// The backend that runs ops on `device`. Throws tg::Error when the device is CUDA and this build has
// no CUDA backend or no GPU is present.
Backend& backend_for(Device device);

}  // namespace tg

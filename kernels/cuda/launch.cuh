// Launchers of the CUDA kernels: plain C++ declarations on raw device pointers, shared by the .cu
// files that define them and by cuda_backend.cpp (compiled by g++) that calls them.
//
// Conventions:
//  - Every launcher enqueues its kernels on `stream` and returns the first launch error
//    (cudaGetLastError after each launch), or cudaSuccess. Nothing here throws or allocates:
//    scratch memory comes from the caller (see the *_workspace_bytes functions).
//  - Sizes are element counts. A launcher given zero elements launches nothing.
//  - float is the only floating type on the GPU. "bits" kernels (fill, copy) move 4-byte words, so
//    they serve f32 and i32 alike.
//  - Every reduction runs in a fixed order that depends only on the shapes: the same inputs give
//    bit-identical outputs run to run. No kernel uses floating-point atomics.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tg::cuda {

// ---------------------------------------------------------------- layouts
// A strided view as the kernels see it (dimensions of size 1 dropped, mergeable ones merged).
constexpr int kMaxDims = 8;
struct Layout {
  int rank = 0;
  std::int64_t shape[kMaxDims] = {};
  std::int64_t strides[kMaxDims] = {};
};

// How an operand of an elementwise kernel maps the output's linear index to its own offset.
enum class Access : int {
  flat,     // offset = index (contiguous, same shape as the output)
  scalar,   // offset = 0 (one element broadcast everywhere)
  row,      // offset = index % row_length (one contiguous row repeated: a bias)
  strided,  // general: decode the index over the layout's shape, dot with its strides
};
struct Operand {
  Access access = Access::flat;
  std::int64_t row_length = 1;  // for Access::row
  Layout layout;                // for Access::strided
};

// ---------------------------------------------------------------- op codes
// Mirrors of tg::UnaryOp / tg::BinaryOp, kept here so that .cu files need no engine headers.
enum class UnaryCode : int { neg, exp, log, abs, sqrt, square, sign, relu, gelu, gelu_grad2, affine };
enum class BinaryCode : int { add, sub, mul, div };
// Mirror of tg::ReduceOp. abs_entropy sums -|x| ln|x| (0 at x = 0).
enum class ReduceCode : int { sum, sum_squares, abs_entropy };

// ---------------------------------------------------------------- setup
// The most dynamic shared memory (bytes) each attention kernel may be launched with on a device.
struct KernelLimits {
  int attention_short_forward = 48 * 1024;
  int attention_short_backward = 48 * 1024;
  int attention_row_forward = 48 * 1024;
  int attention_row_backward = 48 * 1024;
};
// Raises the dynamic shared-memory limit of the kernels that can use more than 48 KiB to what the
// device allows (`max_optin_smem`, its opt-in maximum per block, less each kernel's static shared
// memory) and reports the limits. Call once per device, with that device current.
cudaError_t configure_kernels(int max_optin_smem, KernelLimits& limits);

// ---------------------------------------------------------------- elementwise.cu
// out (any layout, n elements) = value, as a 4-byte pattern.
cudaError_t launch_fill(std::uint32_t* out, const Operand& out_access, std::uint32_t bits, std::int64_t n,
                        cudaStream_t stream);
// dst = src, 4-byte words; both any layout describing the same n logical elements in row-major order.
cudaError_t launch_copy(const std::uint32_t* src, const Operand& src_access, std::uint32_t* dst,
                        const Operand& dst_access, std::int64_t n, cudaStream_t stream);
// out[n] = op(x[n]); x, out contiguous [n].
cudaError_t launch_unary(UnaryCode op, const float* x, float* out, std::int64_t n, float alpha, float beta,
                         cudaStream_t stream);
// dx[n] = dy[n] * act'(x[n]) for act in {relu, gelu}; all contiguous [n].
cudaError_t launch_activation_backward(UnaryCode act, const float* x, const float* dy, float* dx, std::int64_t n,
                                       cudaStream_t stream);
// y[rows, c] = gelu(x + bias), dx[rows, c] = dy * gelu'(x + bias); bias: [c]; all contiguous.
cudaError_t launch_bias_gelu_forward(const float* x, const float* bias, float* y, std::int64_t rows, std::int64_t c,
                                     cudaStream_t stream);
cudaError_t launch_bias_gelu_backward(const float* x, const float* bias, const float* dy, float* dx, std::int64_t rows,
                                      std::int64_t c, cudaStream_t stream);
// out (contiguous [n]) = a (op) b, each operand read through its access pattern. out may alias a
// flat operand (in-place add).
cudaError_t launch_binary(BinaryCode op, const float* a, const Operand& a_access, const float* b,
                          const Operand& b_access, float* out, std::int64_t n, cudaStream_t stream);

// ---------------------------------------------------------------- reduce.cu
// x: [outer, reduce, inner] -> out: [outer, inner]; the sum of x, x^2 or -|x| ln|x| by `op`. Few long
// columns are split over blocks by rows, into a scratch of reduce_dim_workspace_bytes (0 otherwise).
std::size_t reduce_dim_workspace_bytes(std::int64_t outer, std::int64_t reduce, std::int64_t inner);
cudaError_t launch_reduce_dim(ReduceCode op, const float* x, float* out, std::int64_t outer, std::int64_t reduce,
                              std::int64_t inner, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream);
// Stage 2 of a deterministic split column sum: partials [chunks, size] -> out [size], each entry the
// sum of its column in chunk order (reduce_dim's split path and LayerNorm's parameter gradients); with
// partials2 and out2, a second sum of the same shape in the same launch.
cudaError_t launch_sum_chunk_partials(const double* partials, float* out, std::int64_t chunks, std::int64_t size,
                                      cudaStream_t stream, const double* partials2 = nullptr, float* out2 = nullptr);
// x: [n] -> out: [1] (CUB DeviceReduce, double accumulator). Scratch of reduce_all_workspace_bytes(n).
std::size_t reduce_all_workspace_bytes(std::int64_t n);
cudaError_t launch_reduce_all(ReduceCode op, const float* x, float* out, std::int64_t n, void* workspace,
                              std::size_t workspace_bytes, cudaStream_t stream);
// x: [rows, n] -> out: i32 [rows], index of the first maximum (NaNs skipped, as the CPU's scan).
cudaError_t launch_argmax_lastdim(const float* x, std::int32_t* out, std::int64_t rows, std::int64_t n,
                                  cudaStream_t stream);
// a, b: i32 [n] -> out: [1], the number of positions where they agree (an exact integer count).
cudaError_t launch_count_equal(const std::int32_t* a, const std::int32_t* b, float* out, std::int64_t n,
                               cudaStream_t stream);

// ---------------------------------------------------------------- optimizer.cu (flat buffers [n])
struct AdamConstants {
  float beta1, beta2, weight_decay, step_size /* lr / bc1 */, sqrt_bc2, eps, decay /* 1 - lr wd */;
  bool decoupled;
};
// Every update reads g clipped as clip_by_norm would (g * min(1, max_norm / (clip_norm[0] + 1e-6)))
// when clip_norm (one element on the device) is not null.
struct Clip {
  const float* norm = nullptr;
  float max_norm = 0.f;
};
cudaError_t launch_adam_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamConstants& c,
                               Clip clip, cudaStream_t stream);
// The same update with step_size, sqrt_bc2 and decay read from `scalars` ([3] on the device, in that
// order; c's fields of those names are not used), so a captured graph serves every step.
cudaError_t launch_adam_update_device(float* p, const float* g, float* m, float* v, std::int64_t n,
                                      const AdamConstants& c, const float* scalars, Clip clip, cudaStream_t stream);
// buf may be null when momentum == 0.
cudaError_t launch_sgd_update(float* p, const float* g, float* buf, std::int64_t n, float lr, float momentum,
                              float weight_decay, bool first_step, Clip clip, cudaStream_t stream);
// The same with lr and the first-step flag read from `scalars` ([2] on the device: lr, first != 0).
cudaError_t launch_sgd_update_device(float* p, const float* g, float* buf, std::int64_t n, const float* scalars,
                                     float momentum, float weight_decay, Clip clip, cudaStream_t stream);
// x *= min(1, max_norm / (norm[0] + 1e-6)); norm: one element on the device.
cudaError_t launch_clip_by_norm(float* x, std::int64_t n, const float* norm, float max_norm, cudaStream_t stream);
// out[s] = the sum (of x, x^2 or -|x| ln|x|) over x[offsets[s] : offsets[s+1]]; offsets on the host [segments + 1].
cudaError_t launch_segmented_reduce(ReduceCode op, const float* x, const std::int64_t* host_offsets,
                                    std::int64_t segments, float* out, cudaStream_t stream);
// x[offsets[s] : offsets[s+1]] *= scales[s]; offsets on the host, scales on the device.
cudaError_t launch_segmented_scale(float* x, const std::int64_t* host_offsets, std::int64_t segments,
                                   const float* scales, cudaStream_t stream);

// ---------------------------------------------------------------- softmax.cu  x, y, dy, dx: [rows, n]
cudaError_t launch_softmax_forward(const float* x, float* y, std::int64_t rows, std::int64_t n, cudaStream_t stream);
cudaError_t launch_softmax_backward(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t n,
                                    cudaStream_t stream);

// ---------------------------------------------------------------- layernorm.cu
// x, y: [rows, c]; gamma, beta: [c]; mean, rstd: [rows].
cudaError_t launch_layernorm_forward(const float* x, const float* gamma, const float* beta, float eps, float* y,
                                     float* mean, float* rstd, std::int64_t rows, std::int64_t c,
                                     cudaStream_t stream);
// sum = x + residual, then y, mean, rstd as above from sum. x, residual, sum, y: [rows, c].
cudaError_t launch_add_layernorm_forward(const float* x, const float* residual, const float* gamma, const float* beta,
                                         float eps, float* sum, float* y, float* mean, float* rstd, std::int64_t rows,
                                         std::int64_t c, cudaStream_t stream);
// dy, x, dx: [rows, c]; gamma, dgamma, dbeta: [c]; mean, rstd: [rows]; dsum: null or [rows, c], added to dx.
std::size_t layernorm_backward_workspace_bytes(std::int64_t rows, std::int64_t c);
cudaError_t launch_layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                                      const float* rstd, const float* dsum, float* dx, float* dgamma, float* dbeta,
                                      std::int64_t rows, std::int64_t c, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream);
// Second order: ga [rows, c], gg, gb [c] (gradients of dx, dgamma, dbeta) -> ddy, dx2 [rows, c], dgamma2 [c].
std::size_t layernorm_double_backward_workspace_bytes(std::int64_t rows, std::int64_t c);
cudaError_t launch_layernorm_double_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                                             const float* rstd, const float* ga, const float* gg, const float* gb,
                                             float* ddy, float* dx2, float* dgamma2, std::int64_t rows,
                                             std::int64_t c, void* workspace, std::size_t workspace_bytes,
                                             cudaStream_t stream);

// ---------------------------------------------------------------- attention.cu
// qkv: [B, T, 3C]; y: [B, T, C]; probs: [B, H, T, T]. limits: from configure_kernels (they decide
// whether a head fits the fused short-sequence kernel).
cudaError_t launch_attention_forward(const float* qkv, float* y, float* probs, std::int64_t b, std::int64_t t,
                                     std::int64_t c, std::int64_t h, const KernelLimits& limits,
                                     cudaStream_t stream);
// dy: [B, T, C]; qkv, dqkv: [B, T, 3C]; probs: [B, H, T, T].
std::size_t attention_backward_workspace_bytes(std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h,
                                               const KernelLimits& limits);
cudaError_t launch_attention_backward(const float* dy, const float* qkv, const float* probs, float* dqkv,
                                      std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h,
                                      const KernelLimits& limits, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream);
// Second order: g, gqkv: [B, T, 3C]; gdy: [B, T, C] (both overwritten).
std::size_t attention_double_backward_workspace_bytes(std::int64_t b, std::int64_t t, std::int64_t h);
cudaError_t launch_attention_double_backward(const float* dy, const float* qkv, const float* probs, const float* g,
                                             float* gqkv, float* gdy, std::int64_t b, std::int64_t t, std::int64_t c,
                                             std::int64_t h, void* workspace, std::size_t workspace_bytes,
                                             cudaStream_t stream);

// ---------------------------------------------------------------- embedding.cu
// ids: i32 [n]; weight, dweight: [vocab, c]; out, dout: [n, c].
cudaError_t launch_embedding_forward(const std::int32_t* ids, const float* weight, float* out, std::int64_t n,
                                     std::int64_t c, cudaStream_t stream);
cudaError_t launch_embedding_backward(const std::int32_t* ids, const float* dout, float* dweight, std::int64_t n,
                                      std::int64_t vocab, std::int64_t c, cudaStream_t stream);

// ---------------------------------------------------------------- cross_entropy.cu
// logits, dlogits: [n, v]; targets: i32 [n]; losses, lse: [n]; dloss: one element on the device.
std::size_t cross_entropy_forward_workspace_bytes(std::int64_t n);
cudaError_t launch_cross_entropy_forward(const float* logits, const std::int32_t* targets, float* losses, float* lse,
                                         float* mean, std::int64_t n, std::int64_t v, void* workspace,
                                         std::size_t workspace_bytes, cudaStream_t stream);
cudaError_t launch_cross_entropy_backward(const float* logits, const std::int32_t* targets, const float* lse,
                                          const float* dloss, double scale, float* dlogits, std::int64_t n,
                                          std::int64_t v, cudaStream_t stream);

// ---------------------------------------------------------------- stablemax_cross_entropy.cu
// logits, dlogits: [n, v]; targets: i32 [n]; losses, sums: [n]; dloss: one element on the device.
std::size_t stablemax_cross_entropy_forward_workspace_bytes(std::int64_t n);
cudaError_t launch_stablemax_cross_entropy_forward(const float* logits, const std::int32_t* targets, float* losses,
                                                   float* sums, float* mean, std::int64_t n, std::int64_t v,
                                                   void* workspace, std::size_t workspace_bytes, cudaStream_t stream);
cudaError_t launch_stablemax_cross_entropy_backward(const float* logits, const std::int32_t* targets,
                                                    const float* sums, const float* dloss, double scale,
                                                    float* dlogits, std::int64_t n, std::int64_t v,
                                                    cudaStream_t stream);

// ---------------------------------------------------------------- neural_amplify.cu
// NeuralGrok's amplifier (MethodKernels::neural_amplify_forward / _backward). The MLP: linear layer l maps
// in[l] -> out[l] features (in[0] = 1, out[layers - 1] = 1), w[l]: [out[l], in[l]], b[l]: [out[l]], ReLU
// between layers. Segments: host arrays seg_begin / seg_size [segments], sorted, disjoint, non-empty.
constexpr int kMaxAmpLayers = 17;  // linear layers the GPU kernels take (16 hidden layers)
struct AmpMlp {
  int layers = 0;
  int in[kMaxAmpLayers] = {};
  int out[kMaxAmpLayers] = {};
  const float* w[kMaxAmpLayers] = {};
  const float* b[kMaxAmpLayers] = {};
};
struct AmpGrads {  // outputs of the backward, shaped like AmpMlp::w / b (overwritten)
  float* w[kMaxAmpLayers] = {};
  float* b[kMaxAmpLayers] = {};
};
// Raises the amplifier kernels' dynamic shared-memory limit to the device's opt-in maximum and
// reports it (`limit`, bytes). Call once per device, with that device current.
cudaError_t configure_amplifier_kernels(int max_optin_smem, int& limit);
// Two ways to evaluate the MLP (`pieces` below): its exact piecewise-linear form, built on the
// device every call (amplifier_pieces.cu), for MLPs amplifier_pieces_supported takes; or the MLP
// run on every entry in tiles (neural_amplify.cu), whose tile size amplifier_tile_entries gives.
// The pieces path takes at most kMaxPieceLayers linear layers of at most kMaxPieceWidth units, at
// most kMaxAmpPieces possible pieces (the product of hidden size + 1; 16,641 for (128, 128)), and at
// most kMaxPieceStates unit states on any level (its possible intervals x the layer's width: the
// workspace grows with them; 2.1M for (128, 128)).
constexpr int kMaxPieceLayers = 8;
constexpr int kMaxPieceWidth = 1024;
constexpr std::int64_t kMaxAmpPieces = std::int64_t(1) << 17;
constexpr std::int64_t kMaxPieceStates = std::int64_t(1) << 25;
bool amplifier_pieces_supported(const AmpMlp& mlp);
// Entries per tile (32, 16, ..., 1) the direct kernels use for this MLP when a block may use
// `smem_limit` bytes of shared memory; 0 when even one entry's activations do not fit (hidden layers too wide).
int amplifier_tile_entries(const AmpMlp& mlp, int smem_limit);
// g, out, scores: [n]; stats: [segments, 3] (max score, sum exp(score - max), ||p g||).
// tile_entries: the direct path's (ignored with `pieces`).
std::size_t neural_amplify_forward_workspace_bytes(const AmpMlp& mlp, const std::int64_t* seg_size,
                                                   std::int64_t segments, int tile_entries, bool pieces);
cudaError_t launch_neural_amplify_forward(const float* g, std::int64_t n, const AmpMlp& mlp,
                                          const std::int64_t* seg_begin, const std::int64_t* seg_size,
                                          std::int64_t segments, float c, int tile_entries, bool pieces, float* out,
                                          float* scores, float* stats, void* workspace, std::size_t workspace_bytes,
                                          cudaStream_t stream);
// dout, g, dg: [n]; scores, stats: from the forward.
std::size_t neural_amplify_backward_workspace_bytes(const AmpMlp& mlp, std::int64_t n, std::int64_t segments,
                                                    bool pieces);
cudaError_t launch_neural_amplify_backward(const float* dout, const float* g, std::int64_t n, const AmpMlp& mlp,
                                           const std::int64_t* seg_begin, const std::int64_t* seg_size,
                                           std::int64_t segments, float c, int tile_entries, bool pieces,
                                           const float* scores, const float* stats, float* dg, const AmpGrads& grads,
                                           void* workspace, std::size_t workspace_bytes, cudaStream_t stream);

// ---------------------------------------------------------------- grokfast.cu (flat buffers [n], in place)
// mu = g (first_step) or alpha mu + (1 - alpha) g;  g += lambda mu.
cudaError_t launch_grokfast_ema(float* g, float* mu, std::int64_t n, float alpha, float lambda, bool first_step,
                                cudaStream_t stream);
// sum/comp += g (Neumaier);  if evict: sum/comp -= slot;  slot = g;  if amplify: g += lambda (sum + comp) / window.
cudaError_t launch_grokfast_ma(float* g, float* slot, float* sum, float* comp, std::int64_t n, float lambda,
                               std::int64_t window, bool evict, bool amplify, cudaStream_t stream);

}  // namespace tg::cuda

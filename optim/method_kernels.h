// MethodKernels: the kernels of the grokking methods (NeuralGrok's amplifier, Grokfast's filters) one
// device provides. They live here rather than in the engine's Backend (engine/backend.h), which knows
// tensors and generic ops only; the methods reach their kernels through method_kernels_for(device),
// the one place that picks the CPU or the CUDA implementation.
//
// The contract is Backend's: kernels never check user input. The callers (the neural_amplify op, the
// Grokfast filters) have checked shapes, dtypes and devices, made inputs contiguous and allocated
// outputs. On the GPU these kernels run on the device's one stream, in order with the Backend's.
//
// Implementations: kernels/cpu/cpu_method_kernels.cpp (f32 and f64), kernels/cuda/cuda_method_kernels.cpp (f32).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/device.h"
#include "engine/ops.h"  // Segment
#include "engine/tensor.h"

namespace tg {

// How the amplifier's MLP is evaluated: `pieces` as the exact piecewise-linear function of its scalar
// input it is (kernels/cpu/amplifier_pieces.h, kernels/cuda/amplifier_pieces.cuh), `direct` on every
// entry, `automatic` whichever the device's kernels expect to be faster. Every path gives the same
// results to rounding; a device that cannot take `pieces` for an MLP (too many possible pieces) says so.
enum class MlpPath { automatic, direct, pieces };

class MethodKernels {
 public:
  virtual ~MethodKernels() = default;

  // ---- NeuralGrok's gradient amplifier (optim/neural_amplify.cpp) ----
  // g, out, scores: [N]; weights: the MLP [W0 [h1, 1], b0 [h1], W1 [h2, h1], b1 [h2], ..., Wk [1, hk],
  // bk [1]] (k >= 1 hidden layers, ReLU between layers, none after the last); segments: sorted,
  // disjoint, non-empty runs inside [0, N) (the op checks all of this); path: how the MLP is
  // evaluated; stats: [S, 3], S segments. For every segment s and i in s:
  //   scores_i = mlp(g_i),  p = softmax(scores over s),  q = p g,  out_i = c q_i / ||q||_s;
  //   stats[s] = (max_i scores_i, sum_i exp(scores_i - max), ||q||_s).
  // out is 0 outside every segment; scores there are left unwritten. scores and stats are what the
  // backward needs (it recomputes the MLP's hidden activations instead of saving them).
  virtual void neural_amplify_forward(const Tensor& g, const std::vector<Tensor>& weights,
                                      const std::vector<Segment>& segments, double c, MlpPath path,
                                      const Tensor& out, const Tensor& scores, const Tensor& stats) = 0;
  // The first-order backward of neural_amplify_forward. dout, dg: [N]; dweights: one per weight, with
  // its shape (overwritten, not accumulated); scores, stats: from the forward. dg is 0 outside every
  // segment. Weight gradients are sums over all entries, combined in an order fixed by the shapes.
  virtual void neural_amplify_backward(const Tensor& dout, const Tensor& g, const std::vector<Tensor>& weights,
                                       const std::vector<Segment>& segments, double c, MlpPath path,
                                       const Tensor& scores, const Tensor& stats, const Tensor& dg,
                                       const std::vector<Tensor>& dweights) = 0;

  // ---- Grokfast gradient filters (GrokfastEma, GrokfastMa), in place over flat buffers of equal length ----
  // EMA: mu = g (first_step) or alpha mu + (1 - alpha) g;  then g += lambda mu.
  virtual void grokfast_ema(const Tensor& grad, const Tensor& mu, double alpha, double lambda, bool first_step) = 0;
  // MA over a window of `window` raw gradients kept in a ring of flat buffers; (sum, comp) is the
  // window's running sum with its compensation term (Neumaier), value sum + comp. One step:
  //   old = slot;  sum += g;  if evict: sum -= old;  slot = g;  if amplify: g += lambda (sum + comp) / window.
  // (evict: the slot held the oldest gradient of a full window; amplify: the window is full after
  // this step's insert.)
  virtual void grokfast_ma(const Tensor& grad, const Tensor& slot, const Tensor& sum, const Tensor& comp,
                           double lambda, std::int64_t window, bool evict, bool amplify) = 0;
};

// The method kernels of `device`. Throws tg::Error when the device is CUDA and this build has no CUDA
// backend or no GPU is present (the errors of backend_for).
MethodKernels& method_kernels_for(Device device);

}  // namespace tg

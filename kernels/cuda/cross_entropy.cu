// Fused log-softmax + negative log-likelihood per row, and its gradient (softmax - onehot) * dl.
//
// Forward: one warp per row (8 rows per 256-thread block); max, then sum of exp(x - max) in double
// by lane-strided loops and the warp butterfly (deterministic); lse = max + log(sum).
// Backward: one thread per logit; the factor dloss[0] * scale is read on the device (no host round
// trip), computed in double and rounded to float as on the CPU.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// logits: [n, v]; targets: [n]; losses, lse: [n]
__global__ void cross_entropy_forward_kernel(const float* logits, const std::int32_t* targets, float* losses,
                                             float* lse, std::int64_t n, std::int64_t v) {
  const int lane = threadIdx.x % kWarp;
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < n;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* xr = logits + row * v;
    float max = -INFINITY;
    for (std::int64_t j = lane; j < v; j += kWarp) max = fmaxf(max, xr[j]);
    max = warp_max(max);
    double total = 0.0;
    for (std::int64_t j = lane; j < v; j += kWarp) total += exp(double(xr[j]) - double(max));
    total = warp_sum(total);
    if (lane == 0) {
      const double l = double(max) + log(total);
      lse[row] = static_cast<float>(l);
      losses[row] = static_cast<float>(l - double(xr[targets[row]]));
    }
  }
}

// logits, dlogits: [n, v]; targets, lse: [n]; dloss: [1]
__global__ void cross_entropy_backward_kernel(const float* logits, const std::int32_t* targets, const float* lse,
                                              const float* dloss, double scale, float* dlogits, std::int64_t n,
                                              std::int64_t v) {
  const float factor = static_cast<float>(double(dloss[0]) * scale);
  const std::int64_t total = n * v;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t row = idx / v, col = idx % v;
    float d = expf(logits[idx] - lse[row]) * factor;
    if (col == targets[row]) d -= factor;
    dlogits[idx] = d;
  }
}

}  // namespace

cudaError_t launch_cross_entropy_forward(const float* logits, const std::int32_t* targets, float* losses, float* lse,
                                         std::int64_t n, std::int64_t v, cudaStream_t stream) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  cross_entropy_forward_kernel<<<grid_for(n, kRowsPerBlock), kThreads, 0, stream>>>(logits, targets, losses, lse, n,
                                                                                    v);
  return cudaGetLastError();
}

cudaError_t launch_cross_entropy_backward(const float* logits, const std::int32_t* targets, const float* lse,
                                          const float* dloss, double scale, float* dlogits, std::int64_t n,
                                          std::int64_t v, cudaStream_t stream) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  cross_entropy_backward_kernel<<<grid_for(n * v, kThreads), kThreads, 0, stream>>>(logits, targets, lse, dloss, scale,
                                                                                    dlogits, n, v);
  return cudaGetLastError();
}

}  // namespace tg::cuda

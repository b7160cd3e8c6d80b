// Fused log-softmax + negative log-likelihood per row, and its gradient (softmax - onehot) * dl.
//
// Forward: one warp per row (8 rows per 256-thread block); max, then sum of exp(x - max) in double
// by lane-strided loops and the warp butterfly (deterministic); lse = max + log(sum). The mean loss
// comes out of the same launch, the same run to run (row_loss_mean.cuh).
// Backward: one thread per logit; the factor dloss[0] * scale is read on the device (no host round
// trip), computed in double and rounded to float as on the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/row_loss_mean.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// logits: [n, v]; targets: [n]; losses, lse: [n]; mean: [1]; partials: [gridDim.x]; ticket: 0 on entry.
__global__ void cross_entropy_forward_kernel(const float* logits, const std::int32_t* targets, float* losses,
                                             float* lse, float* mean, float inv_n, double* partials,
                                             unsigned int* ticket, std::int64_t n, std::int64_t v) {
  __shared__ double warp_losses[kRowsPerBlock];
  const int lane = threadIdx.x % kWarp;
  double my_losses = 0.0;  // lane 0: this warp's rows, in the order it visits them
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
      const float loss = static_cast<float>(l - double(xr[targets[row]]));
      losses[row] = loss;
      my_losses += loss;
    }
  }
  finish_row_loss_mean(my_losses, warp_losses, partials, ticket, inv_n, mean);
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

std::size_t cross_entropy_forward_workspace_bytes(std::int64_t n) {
  return row_loss_mean_workspace_bytes(grid_for(n, kRowsPerBlock));
}

cudaError_t launch_cross_entropy_forward(const float* logits, const std::int32_t* targets, float* losses, float* lse,
                                         float* mean, std::int64_t n, std::int64_t v, void* workspace,
                                         std::size_t workspace_bytes, cudaStream_t stream) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  if (workspace_bytes < cross_entropy_forward_workspace_bytes(n)) return cudaErrorInvalidValue;
  const unsigned blocks = grid_for(n, kRowsPerBlock);
  double* partials = nullptr;
  unsigned int* ticket = nullptr;
  TG_RETURN_IF_ERROR(prepare_row_loss_mean(workspace, blocks, stream, partials, ticket));
  const float inv_n = static_cast<float>(1.0 / static_cast<double>(n));
  cross_entropy_forward_kernel<<<blocks, kThreads, 0, stream>>>(logits, targets, losses, lse, mean, inv_n, partials,
                                                                ticket, n, v);
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

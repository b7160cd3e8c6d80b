// StableMax cross-entropy per row and its gradient, laid out like cross_entropy.cu: softmax's exp
// replaced by s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0), written branch-free as
// (1 + pos(x)) / (1 - neg(x)) with pos, neg the parts of x on either side of 0 (NaN stays NaN).
//
// Forward: one warp per row (8 rows per 256-thread block); the sum of s(x) in double by lane-strided
// loops and the warp butterfly (deterministic; s needs no max shift). The mean loss comes out of the
// same launch, the same run to run (row_loss_mean.cuh).
// Backward: one thread per logit; the factor dloss[0] * scale is read on the device, computed in
// double and rounded to float as on the CPU.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/row_loss_mean.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

template <class T> __device__ __forceinline__ T pos_part(T x) { return x >= T(0) ? x : T(0); }
template <class T> __device__ __forceinline__ T neg_part(T x) { return x >= T(0) ? T(0) : x; }

// logits: [n, v]; targets: [n]; losses, sums: [n]; mean: [1]; partials: [gridDim.x]; ticket: 0 on entry.
__global__ void stablemax_cross_entropy_forward_kernel(const float* logits, const std::int32_t* targets,
                                                       float* losses, float* sums, float* mean, float inv_n,
                                                       double* partials, unsigned int* ticket, std::int64_t n,
                                                       std::int64_t v) {
  __shared__ double warp_losses[kRowsPerBlock];
  const int lane = threadIdx.x % kWarp;
  double my_losses = 0.0;  // lane 0: this warp's rows, in the order it visits them
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < n;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* xr = logits + row * v;
    double total = 0.0;
    for (std::int64_t j = lane; j < v; j += kWarp) {
      const double x = xr[j];
      total += (1.0 + pos_part(x)) / (1.0 - neg_part(x));
    }
    total = warp_sum(total);
    if (lane == 0) {
      sums[row] = static_cast<float>(total);
      const double xt = xr[targets[row]];
      const double log_st = log1p(pos_part(xt)) - log1p(-neg_part(xt));  // log s(x_t), exact near 0
      const float loss = static_cast<float>(log(total) - log_st);
      losses[row] = loss;
      my_losses += loss;
    }
  }
  finish_row_loss_mean(my_losses, warp_losses, partials, ticket, inv_n, mean);
}

// logits, dlogits: [n, v]; targets, sums: [n]; dloss: [1].
// dlogits = (s'(x) / S - [col == target] / (1 + |x|)) * factor, s'(x) = 1 / (1 - neg(x))^2.
__global__ void stablemax_cross_entropy_backward_kernel(const float* logits, const std::int32_t* targets,
                                                        const float* sums, const float* dloss, double scale,
                                                        float* dlogits, std::int64_t n, std::int64_t v) {
  const float factor = static_cast<float>(double(dloss[0]) * scale);
  const std::int64_t total = n * v;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t row = idx / v, col = idx % v;
    const float x = logits[idx];
    const float q = 1.f - neg_part(x);
    float d = 1.f / (q * q) / sums[row];
    if (col == targets[row]) d -= 1.f / (1.f + fabsf(x));
    dlogits[idx] = d * factor;
  }
}

}  // namespace

std::size_t stablemax_cross_entropy_forward_workspace_bytes(std::int64_t n) {
  return row_loss_mean_workspace_bytes(grid_for(n, kRowsPerBlock));
}

cudaError_t launch_stablemax_cross_entropy_forward(const float* logits, const std::int32_t* targets, float* losses,
                                                   float* sums, float* mean, std::int64_t n, std::int64_t v,
                                                   void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  if (workspace_bytes < stablemax_cross_entropy_forward_workspace_bytes(n)) return cudaErrorInvalidValue;
  const unsigned blocks = grid_for(n, kRowsPerBlock);
  double* partials = nullptr;
  unsigned int* ticket = nullptr;
  TG_RETURN_IF_ERROR(prepare_row_loss_mean(workspace, blocks, stream, partials, ticket));
  const float inv_n = static_cast<float>(1.0 / static_cast<double>(n));
  stablemax_cross_entropy_forward_kernel<<<blocks, kThreads, 0, stream>>>(logits, targets, losses, sums, mean, inv_n,
                                                                          partials, ticket, n, v);
  return cudaGetLastError();
}

cudaError_t launch_stablemax_cross_entropy_backward(const float* logits, const std::int32_t* targets,
                                                    const float* sums, const float* dloss, double scale,
                                                    float* dlogits, std::int64_t n, std::int64_t v,
                                                    cudaStream_t stream) {
  if (n <= 0 || v <= 0) return cudaSuccess;
  stablemax_cross_entropy_backward_kernel<<<grid_for(n * v, kThreads), kThreads, 0, stream>>>(
      logits, targets, sums, dloss, scale, dlogits, n, v);
  return cudaGetLastError();
}

}  // namespace tg::cuda

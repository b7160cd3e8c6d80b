// The mean of per-row losses, out of the launch that computes them (one warp per row), the same run to
// run and without floating-point atomics: each block sums its warps' losses in warp order into a
// partial, and the block that finishes last (an integer ticket decides which; it changes no sum) adds
// the partials in block order. cross_entropy.cu and stablemax_cross_entropy.cu share it.
#pragma once

#include "kernels/cuda/common.cuh"

namespace tg::cuda {

// The workspace of a launch of `blocks` blocks: [blocks] double partials, then the ticket (its offset
// is 8-byte aligned anyway).
inline std::size_t row_loss_mean_workspace_bytes(unsigned blocks) {
  return static_cast<std::size_t>(blocks) * sizeof(double) + sizeof(double);
}

// Splits the workspace into partials [blocks] and the ticket, and zeroes the ticket on `stream`. (Plain
// pointers, not a struct, go to the kernel: the emulator checks every pointer argument.)
inline cudaError_t prepare_row_loss_mean(void* workspace, unsigned blocks, cudaStream_t stream, double*& partials,
                                         unsigned int*& ticket) {
  partials = static_cast<double*>(workspace);
  ticket = reinterpret_cast<unsigned int*>(partials + blocks);
  TG_RETURN_IF_ERROR(cudaMemsetAsync(ticket, 0, sizeof(unsigned int), stream));
  return cudaSuccess;
}

// Called by every thread of the block once its rows are done. my_losses: on lane 0, the sum of its
// warp's row losses in the order it visited them; warp_losses: __shared__ [blockDim.x / kWarp].
// mean[0] = inv_n * (the sum of every row's loss, rounded to float), as the CPU computes it.
__device__ __forceinline__ void finish_row_loss_mean(double my_losses, double* warp_losses, double* partials,
                                                     unsigned int* ticket, float inv_n, float* mean) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warp_losses[warp] = my_losses;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double block_sum = 0.0;
  for (unsigned w = 0; w < blockDim.x / kWarp; ++w) block_sum += warp_losses[w];
  partials[blockIdx.x] = block_sum;
  __threadfence();  // the partial is visible to every block before the ticket is taken
  if (atomicAdd(ticket, 1u) == gridDim.x - 1) {  // the last block: every partial is written
    __threadfence();  // acquire side: no read of a partial moves above the ticket
    const volatile double* all = partials;
    double total = 0.0;
    for (unsigned b = 0; b < gridDim.x; ++b) total += all[b];
    mean[0] = inv_n * static_cast<float>(total);
  }
}

}  // namespace tg::cuda

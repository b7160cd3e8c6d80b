// Embedding lookup and its deterministic backward.
//
// Forward: one thread per output element, out[n, c] = weight[ids[n], c].
// Backward without atomics: thread (v, c) owns dweight[v, c] and walks all N ids in order, adding
// dout[n, c] whenever ids[n] == v: the same additions in the same order as the CPU loop, so the
// result is bit-identical to it and run to run. Blocks stage the ids through shared memory in
// chunks. Cost: O(V * N) id comparisons per 128-channel tile plus O(N * C) reads of dout; for the
// grokking tasks (V ~ 100, N ~ 2560, C = 128) that is ~0.25 M comparisons, a few microseconds. A
// large vocabulary (tens of thousands) would want a sort-by-id formulation instead.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kBackwardThreads = 128;
constexpr int kIdsChunk = 1024;

// ids: [n]; weight: [vocab, c]; out: [n, c]
__global__ void embedding_forward_kernel(const std::int32_t* ids, const float* weight, float* out, std::int64_t n,
                                         std::int64_t c) {
  const std::int64_t total = n * c;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t row = idx / c, col = idx % c;
    out[idx] = weight[std::int64_t(ids[row]) * c + col];
  }
}

// ids: [n]; dout: [n, c]; dweight: [vocab, c]. Grid (channel tiles of 128, vocab rows).
__global__ void embedding_backward_kernel(const std::int32_t* ids, const float* dout, float* dweight, std::int64_t n,
                                          std::int64_t vocab, std::int64_t c) {
  __shared__ std::int32_t chunk_ids[kIdsChunk];
  const std::int64_t col = blockIdx.x * std::int64_t(kBackwardThreads) + threadIdx.x;
  for (std::int64_t v = blockIdx.y; v < vocab; v += gridDim.y) {  // block-uniform loop
    float acc = 0.f;
    for (std::int64_t n0 = 0; n0 < n; n0 += kIdsChunk) {
      const int count = static_cast<int>(n - n0 < kIdsChunk ? n - n0 : kIdsChunk);
      __syncthreads();  // the previous chunk is no longer read
      for (int k = threadIdx.x; k < count; k += kBackwardThreads) chunk_ids[k] = ids[n0 + k];
      __syncthreads();
      if (col < c) {
        for (int k = 0; k < count; ++k) {
          if (chunk_ids[k] == v) acc += dout[(n0 + k) * c + col];
        }
      }
    }
    if (col < c) dweight[v * c + col] = acc;
  }
}

}  // namespace

cudaError_t launch_embedding_forward(const std::int32_t* ids, const float* weight, float* out, std::int64_t n,
                                     std::int64_t c, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return cudaSuccess;
  embedding_forward_kernel<<<grid_for(n * c, kThreads), kThreads, 0, stream>>>(ids, weight, out, n, c);
  return cudaGetLastError();
}

cudaError_t launch_embedding_backward(const std::int32_t* ids, const float* dout, float* dweight, std::int64_t n,
                                      std::int64_t vocab, std::int64_t c, cudaStream_t stream) {
  if (vocab <= 0 || c <= 0) return cudaSuccess;
  const std::int64_t tiles = (c + kBackwardThreads - 1) / kBackwardThreads;
  if (tiles > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(vocab < 65535 ? vocab : 65535));
  embedding_backward_kernel<<<grid, kBackwardThreads, 0, stream>>>(ids, dout, dweight, n, vocab, c);
  return cudaGetLastError();
}

}  // namespace tg::cuda

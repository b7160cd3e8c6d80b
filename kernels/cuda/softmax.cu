// Row softmax (max-subtracted) and its backward. One warp per row, 8 rows per 256-thread block;
// lane l handles columns l, l + 32, ...; row sums run in double and combine by the warp butterfly,
// so every row's result is fixed by its values alone (deterministic).
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// x, y: [rows, n]
__global__ void softmax_forward_kernel(const float* x, float* y, std::int64_t rows, std::int64_t n) {
  const int lane = threadIdx.x % kWarp;
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* xr = x + row * n;
    float* yr = y + row * n;
    float max = -INFINITY;
    for (std::int64_t j = lane; j < n; j += kWarp) max = fmaxf(max, xr[j]);
    max = warp_max(max);
    double total = 0.0;
    for (std::int64_t j = lane; j < n; j += kWarp) {
      const float e = expf(xr[j] - max);
      yr[j] = e;
      total += e;
    }
    total = warp_sum(total);
    const float inv = static_cast<float>(1.0 / total);
    for (std::int64_t j = lane; j < n; j += kWarp) yr[j] *= inv;  // each lane rescales what it wrote
  }
}

// y, dy, dx: [rows, n]; dx = y * (dy - sum_j dy_j y_j)
__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t n) {
  const int lane = threadIdx.x % kWarp;
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* yr = y + row * n;
    const float* dyr = dy + row * n;
    float* dxr = dx + row * n;
    double dot = 0.0;
    for (std::int64_t j = lane; j < n; j += kWarp) dot += double(dyr[j]) * double(yr[j]);
    const float s = static_cast<float>(warp_sum(dot));
    for (std::int64_t j = lane; j < n; j += kWarp) dxr[j] = yr[j] * (dyr[j] - s);
  }
}

}  // namespace

cudaError_t launch_softmax_forward(const float* x, float* y, std::int64_t rows, std::int64_t n, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  softmax_forward_kernel<<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(x, y, rows, n);
  return cudaGetLastError();
}

cudaError_t launch_softmax_backward(const float* y, const float* dy, float* dx, std::int64_t rows, std::int64_t n,
                                    cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  softmax_backward_kernel<<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(y, dy, dx, rows, n);
  return cudaGetLastError();
}

}  // namespace tg::cuda

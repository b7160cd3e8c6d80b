// Grokfast gradient filters (kernels/cpu/grokfast.cpp's arithmetic) as one elementwise pass each over
// flat buffers: one thread per element in a grid-stride loop, no reductions, so results do not depend
// on the launch shape.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;

// g, mu: [n]
__global__ void grokfast_ema_kernel(float* g, float* mu, std::int64_t n, float alpha, float lambda, bool first_step) {
  const float keep = 1.f - alpha;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float m = first_step ? gi : alpha * mu[i] + keep * gi;
    mu[i] = m;
    g[i] = gi + lambda * m;
  }
}

// Neumaier's compensated addition into (sum, comp).
__device__ __forceinline__ void compensated_add(float& sum, float& comp, float x) {
  const float t = __fadd_rn(sum, x);
  if (fabsf(sum) >= fabsf(x)) {
    comp = __fadd_rn(comp, __fadd_rn(__fsub_rn(sum, t), x));
  } else {
    comp = __fadd_rn(comp, __fadd_rn(__fsub_rn(x, t), sum));
  }
  sum = t;
}

// g, slot, sum, comp: [n]
__global__ void grokfast_ma_kernel(float* g, float* slot, float* sum, float* comp, std::int64_t n, float lambda,
                                   float window, bool evict, bool amplify) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    float s = sum[i], e = comp[i];
    compensated_add(s, e, gi);
    if (evict) compensated_add(s, e, -slot[i]);
    slot[i] = gi;
    sum[i] = s;
    comp[i] = e;
    if (amplify) g[i] = gi + lambda * ((s + e) / window);
  }
}

}  // namespace

cudaError_t launch_grokfast_ema(float* g, float* mu, std::int64_t n, float alpha, float lambda, bool first_step,
                                cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  grokfast_ema_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(g, mu, n, alpha, lambda, first_step);
  return cudaGetLastError();
}

cudaError_t launch_grokfast_ma(float* g, float* slot, float* sum, float* comp, std::int64_t n, float lambda,
                               std::int64_t window, bool evict, bool amplify, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (window < 1) return cudaErrorInvalidValue;
  grokfast_ma_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(g, slot, sum, comp, n, lambda,
                                                                     static_cast<float>(window), evict, amplify);
  return cudaGetLastError();
}

}  // namespace tg::cuda

// Optimizer and clipping passes over flat parameter buffers (the arithmetic of
// kernels/cpu/optimizer.cpp, i.e. PyTorch's single-tensor Adam/AdamW/SGD; each with its step's values
// as kernel arguments or, for a captured graph, read from a small device buffer), and per-segment
// reductions and scalings of a flat buffer (one segment per parameter tensor).
//
// Elementwise passes: one thread per element in grid-stride loops. Segmented reduce: one 1024-thread
// block per segment, strided double partial sums and the fixed block reduction (deterministic).
// Segment offsets travel by value in the kernel parameters, 256 segments per launch (2 KiB of
// parameters), so no host buffer has to outlive the call. Segmented reduce sums x, x^2 or -|x| ln|x|.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 1024;  // one block per segment: make it a big one
constexpr int kSegmentsPerLaunch = 256;

struct SegmentBatch {
  std::int64_t offsets[kSegmentsPerLaunch + 1];  // absolute offsets into the flat buffer
  int count;
};

// clip_by_norm's coefficient, for an update that clips as it reads each gradient. __fmul_rn rounds
// g * coef on its own, as the separate clip kernel stores it: a plain product could be contracted
// with the weight-decay term into one fused multiply-add and change the last bit. A NaN norm keeps
// the clip active, as in clip_by_norm_kernel, so both clips give NaN on a broken step.
struct ClipScale {
  bool active;
  float coef;
  __device__ __forceinline__ float operator()(float g) const { return active ? __fmul_rn(g, coef) : g; }
};
__device__ __forceinline__ ClipScale clip_scale(Clip clip) {
  if (clip.norm == nullptr) return ClipScale{false, 1.f};
  const float coef = clip.max_norm / (clip.norm[0] + 1e-6f);
  return ClipScale{!(coef >= 1.f), coef};
}

// p, g, m, v: [n]. kDeviceScalars: step_size, sqrt_bc2 and decay come from scalars [3] (written on
// the device before the step) instead of c; the arithmetic is the same either way.
template <bool kDeviceScalars>
__global__ void adam_kernel(float* p, const float* g, float* m, float* v, std::int64_t n, AdamConstants c,
                            const float* scalars, Clip clip_arg) {
  const ClipScale clip = clip_scale(clip_arg);
  const float step_size = kDeviceScalars ? scalars[0] : c.step_size;
  const float sqrt_bc2 = kDeviceScalars ? scalars[1] : c.sqrt_bc2;
  const float decay = kDeviceScalars ? scalars[2] : c.decay;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float grad = clip(g[i]);
    float param = p[i];
    if (c.decoupled) {
      param *= decay;
    } else {
      grad += c.weight_decay * param;
    }
    const float mi = c.beta1 * m[i] + (1.f - c.beta1) * grad;
    const float vi = c.beta2 * v[i] + (1.f - c.beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] = param - step_size * mi / (sqrtf(vi) / sqrt_bc2 + c.eps);
  }
}

// p, g, buf: [n]; buf unused (may be null) when momentum == 0. kDeviceScalars: lr and first_step come
// from scalars [2] = (lr, first != 0).
template <bool kDeviceScalars>
__global__ void sgd_kernel(float* p, const float* g, float* buf, std::int64_t n, float lr, float momentum,
                           float weight_decay, bool first_step, const float* scalars, Clip clip_arg) {
  const ClipScale clip = clip_scale(clip_arg);
  if (kDeviceScalars) {
    lr = scalars[0];
    first_step = scalars[1] != 0.f;
  }
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float grad = clip(g[i]) + weight_decay * p[i];
    if (momentum != 0.f) {
      const float b = first_step ? grad : momentum * buf[i] + grad;
      buf[i] = b;
      p[i] -= lr * b;
    } else {
      p[i] -= lr * grad;
    }
  }
}

// x: [n]; norm: [1]
__global__ void clip_by_norm_kernel(float* x, std::int64_t n, const float* norm, float max_norm) {
  const float coef = max_norm / (norm[0] + 1e-6f);
  if (coef >= 1.f) return;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    x[i] *= coef;
  }
}

// out[first + s] = reduce(x[offsets[s] : offsets[s+1]]) for s < batch.count; one block per segment.
template <ReduceCode kOp>
__global__ void __launch_bounds__(kReduceThreads) segmented_reduce_kernel(const float* x, SegmentBatch batch, float* out) {
  __shared__ double scratch[kWarp];
  const int s = blockIdx.x;
  const std::int64_t begin = batch.offsets[s], end = batch.offsets[s + 1];
  double acc = 0.0;
#pragma unroll 4
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += reduce_term<kOp>(x[i]);
  acc = block_reduce(acc, SumOp{}, scratch);
  if (threadIdx.x == 0) out[s] = static_cast<float>(acc);
}

// x[offsets[s] : offsets[s+1]] *= scales[s]; grid (blocks per segment, batch.count)
__global__ void segmented_scale_kernel(float* x, SegmentBatch batch, const float* scales) {
  const int s = blockIdx.y;
  const std::int64_t begin = batch.offsets[s], end = batch.offsets[s + 1];
  const float scale = scales[s];
  for (std::int64_t i = begin + blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < end;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    x[i] *= scale;
  }
}

SegmentBatch make_batch(const std::int64_t* host_offsets, std::int64_t first, std::int64_t count) {
  SegmentBatch b{};
  b.count = static_cast<int>(count);
  for (std::int64_t k = 0; k <= count; ++k) b.offsets[k] = host_offsets[first + k];
  return b;
}

}  // namespace

cudaError_t launch_adam_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamConstants& c,
                               Clip clip, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  adam_kernel<false><<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, m, v, n, c, nullptr, clip);
  return cudaGetLastError();
}

cudaError_t launch_adam_update_device(float* p, const float* g, float* m, float* v, std::int64_t n,
                                      const AdamConstants& c, const float* scalars, Clip clip, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (scalars == nullptr) return cudaErrorInvalidValue;
  adam_kernel<true><<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, m, v, n, c, scalars, clip);
  return cudaGetLastError();
}

cudaError_t launch_sgd_update(float* p, const float* g, float* buf, std::int64_t n, float lr, float momentum,
                              float weight_decay, bool first_step, Clip clip, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (momentum != 0.f && buf == nullptr) return cudaErrorInvalidValue;
  sgd_kernel<false><<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, buf, n, lr, momentum, weight_decay,
                                                                     first_step, nullptr, clip);
  return cudaGetLastError();
}

cudaError_t launch_sgd_update_device(float* p, const float* g, float* buf, std::int64_t n, const float* scalars,
                                     float momentum, float weight_decay, Clip clip, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if ((momentum != 0.f && buf == nullptr) || scalars == nullptr) return cudaErrorInvalidValue;
  sgd_kernel<true><<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, g, buf, n, 0.f, momentum, weight_decay,
                                                                    false, scalars, clip);
  return cudaGetLastError();
}

cudaError_t launch_clip_by_norm(float* x, std::int64_t n, const float* norm, float max_norm, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  clip_by_norm_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, norm, max_norm);
  return cudaGetLastError();
}

cudaError_t launch_segmented_reduce(ReduceCode op, const float* x, const std::int64_t* host_offsets,
                                    std::int64_t segments, float* out, cudaStream_t stream) {
  for (std::int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
    const std::int64_t count = segments - first < kSegmentsPerLaunch ? segments - first : kSegmentsPerLaunch;
    const SegmentBatch batch = make_batch(host_offsets, first, count);
    const unsigned blocks = static_cast<unsigned>(count);
    switch (op) {
      case ReduceCode::sum:
        segmented_reduce_kernel<ReduceCode::sum><<<blocks, kReduceThreads, 0, stream>>>(x, batch, out + first);
        break;
      case ReduceCode::sum_squares:
        segmented_reduce_kernel<ReduceCode::sum_squares><<<blocks, kReduceThreads, 0, stream>>>(x, batch, out + first);
        break;
      case ReduceCode::abs_entropy:
        segmented_reduce_kernel<ReduceCode::abs_entropy><<<blocks, kReduceThreads, 0, stream>>>(x, batch, out + first);
        break;
    }
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

cudaError_t launch_segmented_scale(float* x, const std::int64_t* host_offsets, std::int64_t segments,
                                   const float* scales, cudaStream_t stream) {
  for (std::int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
    const std::int64_t count = segments - first < kSegmentsPerLaunch ? segments - first : kSegmentsPerLaunch;
    const SegmentBatch batch = make_batch(host_offsets, first, count);
    std::int64_t longest = 0;
    for (std::int64_t k = 0; k < count; ++k) {
      const std::int64_t len = batch.offsets[k + 1] - batch.offsets[k];
      if (len > longest) longest = len;
    }
    if (longest == 0) continue;
    const dim3 grid(grid_for(longest, kThreads, 1024), static_cast<unsigned>(count));
    segmented_scale_kernel<<<grid, kThreads, 0, stream>>>(x, batch, scales + first);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

}  // namespace tg::cuda

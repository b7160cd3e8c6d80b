// Elementwise kernels: fill, strided copy, unary math, activation derivatives and broadcasting
// binary arithmetic. One thread per output element in grid-stride loops; each output element is
// written by exactly one thread from its own inputs, so results are deterministic.
//
// Operands are read through an "indexer" (flat, scalar, repeated row, general strided): the common
// cases (same-shape contiguous, a scalar, a bias row) avoid the per-element index decoding.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;

// ---- indexers: output linear index -> operand offset
struct FlatIdx {
  __device__ __forceinline__ std::int64_t operator()(std::int64_t i) const { return i; }
};
struct ScalarIdx {
  __device__ __forceinline__ std::int64_t operator()(std::int64_t) const { return 0; }
};
struct RowIdx {
  std::int64_t len;
  __device__ __forceinline__ std::int64_t operator()(std::int64_t i) const { return i % len; }
};
struct StridedIdx {
  Layout layout;
  __device__ __forceinline__ std::int64_t operator()(std::int64_t i) const { return layout_offset(layout, i); }
};

// Calls f(indexer) with the indexer matching the operand's access pattern.
template <class F>
cudaError_t with_indexer(const Operand& o, F&& f) {
  switch (o.access) {
    case Access::flat: return f(FlatIdx{});
    case Access::scalar: return f(ScalarIdx{});
    case Access::row: return f(RowIdx{o.row_length});
    case Access::strided: return f(StridedIdx{o.layout});
  }
  return cudaErrorInvalidValue;
}

// ---- math
__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
__device__ __forceinline__ float normal_pdf(float x) { return 0.3989422804014327f * expf(-0.5f * x * x); }

template <UnaryCode Op>
__device__ __forceinline__ float apply_unary(float x, float alpha, float beta) {
  if constexpr (Op == UnaryCode::neg) return -x;
  if constexpr (Op == UnaryCode::exp) return expf(x);
  if constexpr (Op == UnaryCode::log) return logf(x);
  if constexpr (Op == UnaryCode::abs) return fabsf(x);
  if constexpr (Op == UnaryCode::sqrt) return sqrtf(x);
  if constexpr (Op == UnaryCode::square) return x * x;
  if constexpr (Op == UnaryCode::sign) return static_cast<float>((x > 0.f) - (x < 0.f));
  if constexpr (Op == UnaryCode::relu) return x > 0.f ? x : 0.f;
  if constexpr (Op == UnaryCode::gelu) return x * normal_cdf(x);
  if constexpr (Op == UnaryCode::gelu_grad2) return normal_pdf(x) * (2.f - x * x);
  if constexpr (Op == UnaryCode::affine) return alpha * x + beta;
  return x;
}

template <BinaryCode Op>
__device__ __forceinline__ float apply_binary(float a, float b) {
  if constexpr (Op == BinaryCode::add) return a + b;
  if constexpr (Op == BinaryCode::sub) return a - b;
  if constexpr (Op == BinaryCode::mul) return a * b;
  if constexpr (Op == BinaryCode::div) return a / b;
  return a;
}

// ---- kernels

// out[io(i)] = bits for i in [0, n)
template <class IO>
__global__ void fill_kernel(std::uint32_t* out, IO io, std::uint32_t bits, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    out[io(i)] = bits;
  }
}

// dst[id(i)] = src[is(i)] for i in [0, n)
template <class IS, class ID>
__global__ void copy_kernel(const std::uint32_t* src, IS is, std::uint32_t* dst, ID id, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    dst[id(i)] = src[is(i)];
  }
}

// x, out: [n]
template <UnaryCode Op>
__global__ void unary_kernel(const float* x, float* out, std::int64_t n, float alpha, float beta) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    out[i] = apply_unary<Op>(x[i], alpha, beta);
  }
}

// x, dy, dx: [n]
__global__ void relu_backward_kernel(const float* x, const float* dy, float* dx, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    dx[i] = x[i] > 0.f ? dy[i] : 0.f;
  }
}

// x, dy, dx: [n]; gelu'(x) = Phi(x) + x phi(x)
__global__ void gelu_backward_kernel(const float* x, const float* dy, float* dx, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    dx[i] = dy[i] * (normal_cdf(v) + v * normal_pdf(v));
  }
}

// x, y: [rows, c] as n = rows * c elements; bias: [c]. y = gelu(x + bias).
__global__ void bias_gelu_forward_kernel(const float* x, const float* bias, float* y, std::int64_t n, std::int64_t c) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float h = x[i] + bias[i % c];
    y[i] = h * normal_cdf(h);
  }
}

// x, dy, dx: [rows, c] as n elements; bias: [c]. dx = dy * gelu'(x + bias).
__global__ void bias_gelu_backward_kernel(const float* x, const float* bias, const float* dy, float* dx, std::int64_t n,
                                          std::int64_t c) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    const float h = x[i] + bias[i % c];
    dx[i] = dy[i] * (normal_cdf(h) + h * normal_pdf(h));
  }
}

// out: [n] contiguous; a, b read through their indexers. out may alias a flat a or b.
template <BinaryCode Op, class IA, class IB>
__global__ void binary_kernel(const float* a, IA ia, const float* b, IB ib, float* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
    out[i] = apply_binary<Op>(a[ia(i)], b[ib(i)]);
  }
}

template <UnaryCode Op>
cudaError_t unary_as(const float* x, float* out, std::int64_t n, float alpha, float beta, cudaStream_t stream) {
  unary_kernel<Op><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, out, n, alpha, beta);
  return cudaGetLastError();
}

template <BinaryCode Op>
cudaError_t binary_as(const float* a, const Operand& ao, const float* b, const Operand& bo, float* out, std::int64_t n,
                      cudaStream_t stream) {
  auto launch = [&](auto ia, auto ib) {
    binary_kernel<Op><<<grid_for(n, kThreads), kThreads, 0, stream>>>(a, ia, b, ib, out, n);
    return cudaGetLastError();
  };
  const Access ka = ao.access, kb = bo.access;
  // The fast paths; every other combination decodes both operands' layouts.
  if (ka == Access::flat && kb == Access::flat) return launch(FlatIdx{}, FlatIdx{});
  if (ka == Access::flat && kb == Access::scalar) return launch(FlatIdx{}, ScalarIdx{});
  if (ka == Access::scalar && kb == Access::flat) return launch(ScalarIdx{}, FlatIdx{});
  if (ka == Access::flat && kb == Access::row) return launch(FlatIdx{}, RowIdx{bo.row_length});
  if (ka == Access::row && kb == Access::flat) return launch(RowIdx{ao.row_length}, FlatIdx{});
  return launch(StridedIdx{ao.layout}, StridedIdx{bo.layout});
}

}  // namespace

cudaError_t launch_fill(std::uint32_t* out, const Operand& out_access, std::uint32_t bits, std::int64_t n,
                        cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (out_access.access == Access::flat) {
    fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, FlatIdx{}, bits, n);
  } else {
    fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, StridedIdx{out_access.layout}, bits, n);
  }
  return cudaGetLastError();
}

cudaError_t launch_copy(const std::uint32_t* src, const Operand& src_access, std::uint32_t* dst,
                        const Operand& dst_access, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (src_access.access == Access::flat && dst_access.access == Access::flat) {
    return cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(std::uint32_t), cudaMemcpyDeviceToDevice,
                           stream);
  }
  // The destination is written through flat or strided indexing (never scalar or row: it holds n
  // distinct elements); the source through any.
  const bool dst_flat = dst_access.access == Access::flat;
  return with_indexer(src_access, [&](auto is) {
    if (dst_flat) {
      copy_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(src, is, dst, FlatIdx{}, n);
    } else {
      copy_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(src, is, dst, StridedIdx{dst_access.layout}, n);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_unary(UnaryCode op, const float* x, float* out, std::int64_t n, float alpha, float beta,
                         cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (op) {
    case UnaryCode::neg: return unary_as<UnaryCode::neg>(x, out, n, alpha, beta, stream);
    case UnaryCode::exp: return unary_as<UnaryCode::exp>(x, out, n, alpha, beta, stream);
    case UnaryCode::log: return unary_as<UnaryCode::log>(x, out, n, alpha, beta, stream);
    case UnaryCode::abs: return unary_as<UnaryCode::abs>(x, out, n, alpha, beta, stream);
    case UnaryCode::sqrt: return unary_as<UnaryCode::sqrt>(x, out, n, alpha, beta, stream);
    case UnaryCode::square: return unary_as<UnaryCode::square>(x, out, n, alpha, beta, stream);
    case UnaryCode::sign: return unary_as<UnaryCode::sign>(x, out, n, alpha, beta, stream);
    case UnaryCode::relu: return unary_as<UnaryCode::relu>(x, out, n, alpha, beta, stream);
    case UnaryCode::gelu: return unary_as<UnaryCode::gelu>(x, out, n, alpha, beta, stream);
    case UnaryCode::gelu_grad2: return unary_as<UnaryCode::gelu_grad2>(x, out, n, alpha, beta, stream);
    case UnaryCode::affine: return unary_as<UnaryCode::affine>(x, out, n, alpha, beta, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_activation_backward(UnaryCode act, const float* x, const float* dy, float* dx, std::int64_t n,
                                       cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (act == UnaryCode::relu) {
    relu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, dy, dx, n);
  } else if (act == UnaryCode::gelu) {
    gelu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, dy, dx, n);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_bias_gelu_forward(const float* x, const float* bias, float* y, std::int64_t rows, std::int64_t c,
                                     cudaStream_t stream) {
  const std::int64_t n = rows * c;
  if (n <= 0) return cudaSuccess;
  bias_gelu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, bias, y, n, c);
  return cudaGetLastError();
}

cudaError_t launch_bias_gelu_backward(const float* x, const float* bias, const float* dy, float* dx, std::int64_t rows,
                                      std::int64_t c, cudaStream_t stream) {
  const std::int64_t n = rows * c;
  if (n <= 0) return cudaSuccess;
  bias_gelu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, bias, dy, dx, n, c);
  return cudaGetLastError();
}

cudaError_t launch_binary(BinaryCode op, const float* a, const Operand& a_access, const float* b,
                          const Operand& b_access, float* out, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (op) {
    case BinaryCode::add: return binary_as<BinaryCode::add>(a, a_access, b, b_access, out, n, stream);
    case BinaryCode::sub: return binary_as<BinaryCode::sub>(a, a_access, b, b_access, out, n, stream);
    case BinaryCode::mul: return binary_as<BinaryCode::mul>(a, a_access, b, b_access, out, n, stream);
    case BinaryCode::div: return binary_as<BinaryCode::div>(a, a_access, b, b_access, out, n, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace tg::cuda

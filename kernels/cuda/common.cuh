// Device helpers shared by the .cu files: launch checks, grid sizing, warp and block reductions.
//
// Reductions here are deterministic: a warp reduction is an xor butterfly (IEEE addition is
// commutative, so both partners of every exchange compute the same bits and all lanes end with
// the same value); a block reduction combines the per-warp results in warp order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.cuh"

// Returns the launch error (if any) of the kernel launched just before.
#define TG_RETURN_IF_LAUNCH_FAILED()              \
  do {                                            \
    const cudaError_t tg_err_ = cudaGetLastError(); \
    if (tg_err_ != cudaSuccess) return tg_err_;   \
  } while (0)

#define TG_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    const cudaError_t tg_err_ = (expr);           \
    if (tg_err_ != cudaSuccess) return tg_err_;   \
  } while (0)

namespace tg::cuda {

constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n items with `threads` per block (capped; kernels loop).
inline unsigned grid_for(std::int64_t n, int threads, std::int64_t cap = 65536) {
  std::int64_t blocks = (n + threads - 1) / threads;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

inline int next_pow2(std::int64_t n) {
  int p = 1;
  while (p < n && p < (1 << 30)) p <<= 1;
  return p;
}

struct SumOp {
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, mask));
  return v;
}

template <class T> __device__ __forceinline__ T warp_sum(T v) { return warp_reduce(v, SumOp{}); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp{}); }

// Reduces v over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 values; the leading barrier lets the block call this repeatedly.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  v = warp_reduce(v, op);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
  return r;
}

// The term a ReduceCode sums, in double: x, x^2 or -|x| ln|x| (0 at x = 0, NaN stays NaN).
template <ReduceCode kOp>
__device__ __forceinline__ double reduce_term(float value) {
  const double v = value;
  if constexpr (kOp == ReduceCode::sum) {
    return v;
  } else if constexpr (kOp == ReduceCode::sum_squares) {
    return v * v;
  } else {
    const double a = fabs(v);
    return a == 0.0 ? 0.0 : -a * log(a);
  }
}

// Offset of the element with row-major linear index `index` in a strided layout.
__device__ __forceinline__ std::int64_t layout_offset(const Layout& l, std::int64_t index) {
  std::int64_t offset = 0;
  for (int d = l.rank - 1; d >= 0; --d) {
    const std::int64_t size = l.shape[d];
    const std::int64_t i = index % size;
    index /= size;
    offset += i * l.strides[d];
  }
  return offset;
}

}  // namespace tg::cuda

// Reductions: along one dimension, over everything (CUB), argmax along the last dimension, and the
// count of equal ids (a training step's correct predictions, kept on the device).
// All accumulate in double and combine partial sums in an order fixed by the shapes alone.
#include <cub/device/device_reduce.cuh>

#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kReduceThreads = 256;
constexpr std::int64_t kFewTiles = 256;  // fewer (outer, column tile) pairs than this: split long columns

// x: [outer, reduce, inner] -> out: [outer, inner].
// Block (tx, ty) with tx * ty = 256, tx = min(32, next_pow2(inner)): threadIdx.x picks a
// column i of the block's tile, threadIdx.y sums rows r = y, y + ty, y + 2 ty, ... in order; the ty
// partial sums of a column are then combined by a fixed shared-memory tree. Blocks loop over
// (outer, column tile). The block shape depends only on the sizes, so the order is fixed.
template <ReduceCode kOp>
__global__ void __launch_bounds__(kReduceThreads) reduce_dim_kernel(const float* x, float* out, std::int64_t outer, std::int64_t reduce,
                                  std::int64_t inner, std::int64_t tiles_per_outer) {
  __shared__ double partial[kReduceThreads];
  const int tx = blockDim.x, ty = blockDim.y;
  const int slot = threadIdx.y * tx + threadIdx.x;
  for (std::int64_t tile = blockIdx.x; tile < outer * tiles_per_outer; tile += gridDim.x) {
    const std::int64_t o = tile / tiles_per_outer;
    const std::int64_t i = (tile % tiles_per_outer) * tx + threadIdx.x;
    double acc = 0.0;
    if (i < inner) {
      const float* base = x + o * reduce * inner + i;
#pragma unroll 4
      for (std::int64_t r = threadIdx.y; r < reduce; r += ty) {
        acc += reduce_term<kOp>(base[r * inner]);
      }
    }
    partial[slot] = acc;
    __syncthreads();
    for (int s = ty / 2; s > 0; s >>= 1) {
      if (static_cast<int>(threadIdx.y) < s) partial[slot] += partial[slot + s * tx];
      __syncthreads();
    }
    if (threadIdx.y == 0 && i < inner) out[o * inner + i] = static_cast<float>(partial[threadIdx.x]);
    __syncthreads();  // partial is reused by the next tile
  }
}

// The split path, for few long columns (a bias gradient: [2560, 512] -> [512] is 16 column tiles,
// which alone would keep 16 SMs busy): the rows are cut into `chunks` pieces fixed by the shapes
// alone, block (tile, chunk) sums its piece of its tile's columns into a double partial
// [chunks, outer, inner], and chunk_partials_sum_kernel adds the chunks in order.
constexpr int kSplitThreads = 256;
constexpr std::int64_t kSplitTargetBlocks = 512;  // a few waves on any current GPU; a constant, so the order is one
constexpr std::int64_t kSplitMinRows = 64;        // rows per chunk at least

// Columns per block: a warp's worth, or fewer for narrow outputs.
int reduce_tile_width(std::int64_t inner) { return next_pow2(inner) < kWarp ? next_pow2(inner) : kWarp; }

struct ReduceSplit {
  std::int64_t chunks = 1, rows_per_chunk = 0;
};
ReduceSplit reduce_split(std::int64_t outer, std::int64_t reduce, std::int64_t tiles_per_outer) {
  const std::int64_t pairs = outer * tiles_per_outer;
  if (pairs >= kFewTiles) return {};
  std::int64_t chunks = kSplitTargetBlocks / pairs;
  if (reduce / kSplitMinRows < chunks) chunks = reduce / kSplitMinRows;
  if (chunks < 2) return {};
  const std::int64_t rows = (reduce + chunks - 1) / chunks;
  return {(reduce + rows - 1) / rows, rows};
}

// Grid (outer * tiles_per_outer, chunks), block (tx, kSplitThreads / tx): as reduce_dim_kernel over
// rows [chunk * rows_per_chunk, +rows_per_chunk), written to partials[chunk, o, i].
template <ReduceCode kOp>
__global__ void __launch_bounds__(kSplitThreads)
    reduce_dim_partials_kernel(const float* x, double* partials, std::int64_t outer, std::int64_t reduce,
                               std::int64_t inner, std::int64_t tiles_per_outer, std::int64_t rows_per_chunk) {
  __shared__ double partial[kSplitThreads];
  const int tx = blockDim.x, ty = blockDim.y;
  const int slot = threadIdx.y * tx + threadIdx.x;
  const std::int64_t tile = blockIdx.x, chunk = blockIdx.y;
  const std::int64_t o = tile / tiles_per_outer;
  const std::int64_t i = (tile % tiles_per_outer) * tx + threadIdx.x;
  const std::int64_t begin = chunk * rows_per_chunk;
  const std::int64_t end = begin + rows_per_chunk < reduce ? begin + rows_per_chunk : reduce;
  double acc = 0.0;
  if (i < inner) {
    const float* base = x + o * reduce * inner + i;
#pragma unroll 4
    for (std::int64_t r = begin + threadIdx.y; r < end; r += ty) acc += reduce_term<kOp>(base[r * inner]);
  }
  partial[slot] = acc;
  __syncthreads();
  for (int s = ty / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.y) < s) partial[slot] += partial[slot + s * tx];
    __syncthreads();
  }
  if (threadIdx.y == 0 && i < inner) partials[(chunk * outer + o) * inner + i] = partial[threadIdx.x];
}

// out[k] = sum over chunks, in chunk order, of partials[chunk, k], and the same for partials2 -> out2
// when given (one launch for two sums of one shape): stage 2 of every split column sum.
__global__ void chunk_partials_sum_kernel(const double* partials, float* out, const double* partials2, float* out2,
                                          std::int64_t chunks, std::int64_t size) {
  for (std::int64_t k = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; k < size;
       k += std::int64_t(gridDim.x) * blockDim.x) {
    double acc = 0.0;
    for (std::int64_t c = 0; c < chunks; ++c) acc += partials[c * size + k];
    out[k] = static_cast<float>(acc);
    if (out2 != nullptr) {
      double acc2 = 0.0;
      for (std::int64_t c = 0; c < chunks; ++c) acc2 += partials2[c * size + k];
      out2[k] = static_cast<float>(acc2);
    }
  }
}

struct ToDouble {
  __host__ __device__ double operator()(float v) const { return static_cast<double>(v); }
};
struct SquareToDouble {
  __host__ __device__ double operator()(float v) const { return static_cast<double>(v) * static_cast<double>(v); }
};
struct AbsEntropyToDouble {
  __host__ __device__ double operator()(float v) const {
    const double a = fabs(static_cast<double>(v));
    return a == 0.0 ? 0.0 : -a * log(a);
  }
};
struct AddDouble {
  __host__ __device__ double operator()(double a, double b) const { return a + b; }
};

// out[0] = (float) in[0]
__global__ void double_to_float_kernel(const double* in, float* out) { out[0] = static_cast<float>(in[0]); }

template <class Transform>
cudaError_t transform_reduce(void* temp, std::size_t& temp_bytes, const float* x, double* result, std::int64_t n,
                             cudaStream_t stream) {
  return cub::DeviceReduce::TransformReduce(temp, temp_bytes, x, result, n, AddDouble{}, Transform{}, 0.0, stream);
}

// The workspace holds the double result in its first 256 bytes and CUB's temporary storage after.
constexpr std::size_t kResultBytes = 256;

// x: [rows, n] -> out: [rows]. One warp per row: lane l scans j = l, l + 32, ... keeping the first
// strict maximum (NaNs never win); lanes then combine (larger value, or equal value and smaller
// index). As the CPU's sequential scan: a NaN in column 0 gives 0.
__global__ void argmax_kernel(const float* x, std::int32_t* out, std::int64_t rows, std::int64_t n) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t warps_per_block = blockDim.x / kWarp;
  for (std::int64_t row = blockIdx.x * warps_per_block + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * warps_per_block) {
    const float* xr = x + row * n;
    float best = 0.f;
    std::int64_t best_index = -1;  // -1: no non-NaN value seen
    for (std::int64_t j = lane; j < n; j += kWarp) {
      const float v = xr[j];
      if (v == v && (best_index < 0 || v > best)) {
        best = v;
        best_index = j;
      }
    }
#pragma unroll
    for (int mask = kWarp / 2; mask > 0; mask >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, best, mask);
      const std::int64_t other_index = __shfl_xor_sync(0xffffffffu, best_index, mask);
      const bool take = other_index >= 0 &&
                        (best_index < 0 || other > best || (other == best && other_index < best_index));
      if (take) {
        best = other;
        best_index = other_index;
      }
    }
    if (lane == 0) {
      const bool first_is_nan = !(xr[0] == xr[0]);
      out[row] = static_cast<std::int32_t>(first_is_nan || best_index < 0 ? 0 : best_index);
    }
  }
}

// out[0] = #{i : a[i] == b[i]}; one block, strided per-thread counts, fixed block reduction (exact in
// integers, so the order would not matter anyway).
constexpr int kCountThreads = 1024;
__global__ void __launch_bounds__(kCountThreads) count_equal_kernel(const std::int32_t* a, const std::int32_t* b,
                                                                    float* out, std::int64_t n) {
  __shared__ long long scratch[kWarp];
  long long equal = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) equal += a[i] == b[i];
  equal = block_reduce(equal, SumOp{}, scratch);
  if (threadIdx.x == 0) out[0] = static_cast<float>(equal);
}

}  // namespace

cudaError_t launch_sum_chunk_partials(const double* partials, float* out, std::int64_t chunks, std::int64_t size,
                                      cudaStream_t stream, const double* partials2, float* out2) {
  if (size <= 0) return cudaSuccess;
  chunk_partials_sum_kernel<<<grid_for(size, 256), 256, 0, stream>>>(partials, out, partials2, out2, chunks, size);
  return cudaGetLastError();
}

std::size_t reduce_dim_workspace_bytes(std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  if (outer <= 0 || inner <= 0) return 0;
  const int tx = reduce_tile_width(inner);
  const ReduceSplit split = reduce_split(outer, reduce, (inner + tx - 1) / tx);
  return split.chunks > 1 ? static_cast<std::size_t>(split.chunks * outer * inner) * sizeof(double) : 0;
}

cudaError_t launch_reduce_dim(ReduceCode op, const float* x, float* out, std::int64_t outer, std::int64_t reduce,
                              std::int64_t inner, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream) {
  if (outer <= 0 || inner <= 0) return cudaSuccess;
  const int tx = reduce_tile_width(inner);
  const std::int64_t tiles_per_outer = (inner + tx - 1) / tx;
  const ReduceSplit split = reduce_split(outer, reduce, tiles_per_outer);
  if (split.chunks > 1) {
    if (workspace_bytes < reduce_dim_workspace_bytes(outer, reduce, inner)) return cudaErrorInvalidValue;
    double* partials = static_cast<double*>(workspace);
    const dim3 grid(static_cast<unsigned>(outer * tiles_per_outer), static_cast<unsigned>(split.chunks));
    const dim3 block(tx, kSplitThreads / tx);
    switch (op) {
      case ReduceCode::sum:
        reduce_dim_partials_kernel<ReduceCode::sum>
            <<<grid, block, 0, stream>>>(x, partials, outer, reduce, inner, tiles_per_outer, split.rows_per_chunk);
        break;
      case ReduceCode::sum_squares:
        reduce_dim_partials_kernel<ReduceCode::sum_squares>
            <<<grid, block, 0, stream>>>(x, partials, outer, reduce, inner, tiles_per_outer, split.rows_per_chunk);
        break;
      case ReduceCode::abs_entropy:
        reduce_dim_partials_kernel<ReduceCode::abs_entropy>
            <<<grid, block, 0, stream>>>(x, partials, outer, reduce, inner, tiles_per_outer, split.rows_per_chunk);
        break;
    }
    TG_RETURN_IF_LAUNCH_FAILED();
    return launch_sum_chunk_partials(partials, out, split.chunks, outer * inner, stream);
  }
  // Few pairs over long columns (>= 2 chunks of kSplitMinRows rows) took the split path above.
  const dim3 block(tx, kReduceThreads / tx);
  const unsigned grid = grid_for(outer * tiles_per_outer, 1);
  switch (op) {
    case ReduceCode::sum:
      reduce_dim_kernel<ReduceCode::sum><<<grid, block, 0, stream>>>(x, out, outer, reduce, inner, tiles_per_outer);
      break;
    case ReduceCode::sum_squares:
      reduce_dim_kernel<ReduceCode::sum_squares>
          <<<grid, block, 0, stream>>>(x, out, outer, reduce, inner, tiles_per_outer);
      break;
    case ReduceCode::abs_entropy:
      reduce_dim_kernel<ReduceCode::abs_entropy>
          <<<grid, block, 0, stream>>>(x, out, outer, reduce, inner, tiles_per_outer);
      break;
  }
  return cudaGetLastError();
}

std::size_t reduce_all_workspace_bytes(std::int64_t n) {
  // Room for any of the transforms (they are expected to need the same temporary storage).
  std::size_t plain = 0, squares = 0, entropy = 0;
  if (transform_reduce<ToDouble>(nullptr, plain, nullptr, nullptr, n, nullptr) != cudaSuccess) plain = 0;
  if (transform_reduce<SquareToDouble>(nullptr, squares, nullptr, nullptr, n, nullptr) != cudaSuccess) squares = 0;
  if (transform_reduce<AbsEntropyToDouble>(nullptr, entropy, nullptr, nullptr, n, nullptr) != cudaSuccess) entropy = 0;
  std::size_t most = plain > squares ? plain : squares;
  if (entropy > most) most = entropy;
  return kResultBytes + most;
}

cudaError_t launch_reduce_all(ReduceCode op, const float* x, float* out, std::int64_t n, void* workspace,
                              std::size_t workspace_bytes, cudaStream_t stream) {
  if (n <= 0) return cudaMemsetAsync(out, 0, sizeof(float), stream);  // the empty sum: 0.0f
  if (workspace_bytes < kResultBytes) return cudaErrorInvalidValue;
  double* result = static_cast<double*>(workspace);
  void* temp = static_cast<char*>(workspace) + kResultBytes;
  std::size_t temp_bytes = workspace_bytes - kResultBytes;
  switch (op) {
    case ReduceCode::sum:
      TG_RETURN_IF_ERROR(transform_reduce<ToDouble>(temp, temp_bytes, x, result, n, stream));
      break;
    case ReduceCode::sum_squares:
      TG_RETURN_IF_ERROR(transform_reduce<SquareToDouble>(temp, temp_bytes, x, result, n, stream));
      break;
    case ReduceCode::abs_entropy:
      TG_RETURN_IF_ERROR(transform_reduce<AbsEntropyToDouble>(temp, temp_bytes, x, result, n, stream));
      break;
  }
  TG_RETURN_IF_LAUNCH_FAILED();
  double_to_float_kernel<<<1, 1, 0, stream>>>(result, out);
  return cudaGetLastError();
}

cudaError_t launch_argmax_lastdim(const float* x, std::int32_t* out, std::int64_t rows, std::int64_t n,
                                  cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  argmax_kernel<<<grid_for(rows, kThreads / kWarp), kThreads, 0, stream>>>(x, out, rows, n);
  return cudaGetLastError();
}

cudaError_t launch_count_equal(const std::int32_t* a, const std::int32_t* b, float* out, std::int64_t n,
                               cudaStream_t stream) {
  if (n <= 0) return cudaMemsetAsync(out, 0, sizeof(float), stream);  // no positions: 0.0f
  count_equal_kernel<<<1, kCountThreads, 0, stream>>>(a, b, out, n);
  return cudaGetLastError();
}

}  // namespace tg::cuda

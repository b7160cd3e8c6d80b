// NeuralGrok's gradient amplifier on the GPU (the math of kernels/cpu/neural_amplify.cpp).
//
// Work unit: a tile of up to TE consecutive entries of one segment (TE = 32, or fewer when the hidden
// layers are too wide for shared memory; amplifier_tile_entries). A 256-thread block runs the whole
// MLP on its tile in shared memory: the first layer (input width 1) and the last (one output) as
// loops, every hidden x hidden layer as a tiled matmul (block_gemm: 32 x 128 output tiles, 16-deep
// k slices of both operands staged in shared memory, 2 x 8 outputs per thread, fixed k order).
// Segments travel by value in the kernel parameters, kSegmentsPerLaunch per launch.
//
// Forward, per batch of segments (3 launches):
//   1. amp_forward_kernel, one block per tile: scores s_i = mlp(g_i) (written: the backward needs
//      them) and the tile's (max m_t, sum exp(s - m_t), sum (exp(s - m_t) g)^2) in double.
//   2. amp_stats_kernel, one block per segment: merges its tiles' triples (thread-strided, then a
//      fixed shared-memory tree) into stats = (max, sum exp(s - max), ||p g||).
//   3. amp_output_kernel: out_i = c p_i g_i / ||p g||. (out is zeroed first, so gaps stay 0.)
// Backward, per batch (2 launches), then one:
//   1. amp_dot_kernel, one 1024-thread block per segment: A = sum_j dout_j u_j (u = p g / ||p g||).
//   2. amp_backward_kernel, a persistent grid of at most kBackwardBlocks blocks, block b taking the
//      tiles b, b + grid, ...: ds_i = q_i dq_i and the direct dg_i = p_i dq_i (see the CPU file for the
//      derivation), the hidden activations recomputed into shared memory, then back through the
//      layers: dW, db of every layer added into the block's own slice of a double partials buffer
//      [kBackwardBlocks, params] (each element always by the same thread, in tile order), dg written.
//   3. amp_grad_finish_kernel: dW, db = the partial slices summed in block order, in double.
// No atomics anywhere; every sum runs in an order fixed by the shapes and the tile size, so reruns
// on the same GPU are bit-identical.
//
// The pieces path (`pieces`, for MLPs amplifier_pieces_supported takes) replaces the MLP on every
// entry by its exact piecewise-linear form, built on the device at the start of each call
// (amplifier_pieces.cuh): the MLP's ~16.6k multiply-adds per entry for (128, 128) become a binary
// search and one multiply-add. Forward: the build, then amp_pieces_forward_kernel (scores and tile
// statistics, one thread per entry, kPieceTile entries per block) in place of amp_forward_kernel,
// then the same stats and output kernels. Backward: the build, amp_dot_kernel, then
// amp_pieces_backward_kernel (one thread per entry: dg, ds and the entry's piece), then the
// per-piece sums and the weight gradients (amplifier_pieces.cu).
#include <cmath>

#include "kernels/cuda/amplifier_pieces.cuh"
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;            // every block of the tile kernels: 16 x 16 threads in block_gemm
constexpr int kTileRows = 32;            // rows of a block_gemm output tile; the most entries per tile
constexpr int kTileCols = 128;           // columns of a block_gemm output tile
constexpr int kDepth = 16;               // k slice staged per step
constexpr int kRowsPerThread = kTileRows / 16;
constexpr int kColsPerThread = kTileCols / 16;
constexpr int kStageFloats = kDepth * (kTileRows + 1) + kDepth * (kTileCols + 1);
constexpr int kSegmentsPerLaunch = 64;
constexpr int kBackwardBlocks = 256;     // fixed (not per device), so the summation order is too
constexpr int kDotThreads = 1024;
constexpr int kPieceTile = 256;          // entries per tile (and threads per block) of the pieces path
constexpr std::size_t kAlign = 256;

// The MLP as the kernels see it (by value).
struct Net {
  int layers;
  int in[kMaxAmpLayers], out[kMaxAmpLayers];
  const float* w[kMaxAmpLayers];
  const float* b[kMaxAmpLayers];
  std::int64_t w_offset[kMaxAmpLayers], b_offset[kMaxAmpLayers];  // in one block's slice of the partials
  std::int64_t params;                                             // weights and biases of every layer
  int ld;                                                          // shared activation row stride: widest + 1
};

// A batch of segments and their tiles (by value).
struct Batch {
  std::int64_t begin[kSegmentsPerLaunch];
  std::int64_t size[kSegmentsPerLaunch];
  std::int64_t first_tile[kSegmentsPerLaunch + 1];  // tiles of this batch before segment k
  int count;                                       // segments in this batch
  int first_segment;                               // index of segment 0 of the batch among all segments
  std::int64_t tile_base;                          // tiles of the earlier batches
  int entries;                                     // TE: entries per tile
};

Net make_net(const AmpMlp& mlp) {
  Net net{};
  net.layers = mlp.layers;
  int widest = 1;
  std::int64_t at = 0;
  for (int l = 0; l < mlp.layers; ++l) {
    net.in[l] = mlp.in[l];
    net.out[l] = mlp.out[l];
    net.w[l] = mlp.w[l];
    net.b[l] = mlp.b[l];
    net.w_offset[l] = at;
    at += static_cast<std::int64_t>(mlp.out[l]) * mlp.in[l];
    net.b_offset[l] = at;
    at += mlp.out[l];
    if (l + 1 < mlp.layers && mlp.out[l] > widest) widest = mlp.out[l];
  }
  net.params = at;
  net.ld = widest + 1;
  return net;
}

std::int64_t tiles_of(std::int64_t size, int entries) { return (size + entries - 1) / entries; }

Batch make_batch(const std::int64_t* seg_begin, const std::int64_t* seg_size, std::int64_t first, std::int64_t count,
                 int entries, std::int64_t tile_base) {
  Batch b{};
  b.count = static_cast<int>(count);
  b.first_segment = static_cast<int>(first);
  b.tile_base = tile_base;
  b.entries = entries;
  b.first_tile[0] = 0;
  for (std::int64_t k = 0; k < count; ++k) {
    b.begin[k] = seg_begin[first + k];
    b.size[k] = seg_size[first + k];
    b.first_tile[k + 1] = b.first_tile[k] + tiles_of(b.size[k], entries);
  }
  return b;
}

// Shared memory (floats) of the two tile kernels.
std::size_t forward_smem_floats(const Net& net, int te) {
  return kStageFloats + 2 * static_cast<std::size_t>(te) + 2 * static_cast<std::size_t>(te) * net.ld;
}
std::size_t backward_smem_floats(const Net& net, int te) {
  const std::size_t hidden = static_cast<std::size_t>(net.layers - 1);
  // ds (double, 2 floats each), stage, xs, dg_direct, activations and two gradient buffers.
  return kStageFloats + 4 * static_cast<std::size_t>(te) + (hidden + 2) * static_cast<std::size_t>(te) * net.ld;
}

std::size_t align_up(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------- device helpers

// The segment (within the batch) holding tile `tile`: the last k with first_tile[k] <= tile.
__device__ __forceinline__ int segment_of(const Batch& batch, std::int64_t tile) {
  int lo = 0, hi = batch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (batch.first_tile[mid] <= tile) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// A matrix operand of block_gemm: element (row, k) at p[row * rs + k * ks] (shared or global memory).
struct Operand {
  const float* p;
  std::int64_t rs, ks;
};

// tile[k * (kRows + 1) + r] = x(row0 + r, k0 + k), zero outside [0, rows) x [0, depth). Threads walk
// the operand's unit-stride direction, so global reads coalesce.
template <int kRows>
__device__ __forceinline__ void stage_tile(const Operand& x, int row0, int rows, int k0, int depth, float* tile) {
  constexpr int kCount = kDepth * kRows;
  if (x.ks == 1) {
    for (int idx = threadIdx.x; idx < kCount; idx += kThreads) {
      const int k = idx % kDepth, r = idx / kDepth;
      float v = 0.f;
      if (row0 + r < rows && k0 + k < depth) v = x.p[(row0 + r) * x.rs + (k0 + k)];
      tile[k * (kRows + 1) + r] = v;
    }
  } else {
    for (int idx = threadIdx.x; idx < kCount; idx += kThreads) {
      const int r = idx % kRows, k = idx / kRows;
      float v = 0.f;
      if (row0 + r < rows && k0 + k < depth) v = x.p[(row0 + r) * x.rs + (k0 + k) * x.ks];
      tile[k * (kRows + 1) + r] = v;
    }
  }
}

// C = A B^T: C[r][c] = sum_k A(r, k) B(c, k) for r < M, c < N, k < K (k ascending), handed to
// epi(r, c, value) once per element by a thread fixed by (r mod 32, c mod 128). Called by the whole
// block; ends with a barrier, so epi's writes are visible to every thread afterwards.
template <class Epilogue>
__device__ void block_gemm(int M, int N, int K, const Operand& A, const Operand& B, float* stage, Epilogue epi) {
  float* As = stage;                             // [kDepth][kTileRows + 1]
  float* Bs = stage + kDepth * (kTileRows + 1);  // [kDepth][kTileCols + 1]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int r0 = 0; r0 < M; r0 += kTileRows) {
    for (int c0 = 0; c0 < N; c0 += kTileCols) {
      float acc[kRowsPerThread][kColsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = 0.f;
      }
      for (int k0 = 0; k0 < K; k0 += kDepth) {
        __syncthreads();  // the previous slice (or the caller's writes) are done
        stage_tile<kTileRows>(A, r0, M, k0, K, As);
        stage_tile<kTileCols>(B, c0, N, k0, K, Bs);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kDepth; ++k) {
          float a[kRowsPerThread], b[kColsPerThread];
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i) a[i] = As[k * (kTileRows + 1) + ty + 16 * i];
#pragma unroll
          for (int j = 0; j < kColsPerThread; ++j) b[j] = Bs[k * (kTileCols + 1) + tx + 16 * j];
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
            for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) {
          const int r = r0 + ty + 16 * i, c = c0 + tx + 16 * j;
          if (r < M && c < N) epi(r, c, acc[i][j]);
        }
      }
    }
  }
  __syncthreads();
}

// Activation buffer of hidden layer l: `keep_all` gives every layer its own [te, ld] buffer
// (backward), otherwise two buffers alternate (forward).
__device__ __forceinline__ float* hidden_buffer(float* acts, int l, bool keep_all, int te, int ld) {
  return acts + static_cast<std::int64_t>(keep_all ? l : (l & 1)) * te * ld;
}

// The hidden activations (after ReLU) of the tile's `count` inputs xs, layer by layer.
__device__ void hidden_forward_tile(const Net& net, int count, const float* xs, float* acts, bool keep_all, int te,
                                    float* stage) {
  const int ld = net.ld;
  {
    float* a0 = acts;
    const int h = net.out[0];
    const float* w = net.w[0];
    const float* b = net.b[0];
    for (int idx = threadIdx.x; idx < count * h; idx += kThreads) {
      const int e = idx / h, j = idx % h;
      a0[e * ld + j] = fmaxf(fmaf(w[j], xs[e], b[j]), 0.f);
    }
  }
  __syncthreads();
  for (int l = 1; l + 1 < net.layers; ++l) {
    const float* in = hidden_buffer(acts, l - 1, keep_all, te, ld);
    float* out = hidden_buffer(acts, l, keep_all, te, ld);
    const float* bias = net.b[l];
    block_gemm(count, net.out[l], net.in[l], Operand{in, ld, 1}, Operand{net.w[l], net.in[l], 1}, stage,
               [=](int r, int c, float v) { out[r * ld + c] = fmaxf(v + bias[c], 0.f); });
  }
}

// ---------------------------------------------------------------- forward kernels

// Grid: one block per tile of the batch. Dynamic shared memory: forward_smem_floats.
// tile_stats[(tile_base + tile) * 3 + {0, 1, 2}] = (m_t, sum exp(s - m_t), sum (exp(s - m_t) g)^2).
__global__ void __launch_bounds__(kThreads)
    amp_forward_kernel(const float* g, Net net, Batch batch, float* scores, double* tile_stats) {
  extern __shared__ __align__(16) float smem[];
  const int te = batch.entries, ld = net.ld;
  float* stage = smem;
  float* xs = stage + kStageFloats;
  float* ss = xs + te;
  float* acts = ss + te;

  const std::int64_t tile = blockIdx.x;
  const int s = segment_of(batch, tile);
  const std::int64_t start = batch.begin[s] + (tile - batch.first_tile[s]) * te;
  const std::int64_t left = batch.begin[s] + batch.size[s] - start;
  const int count = left < te ? static_cast<int>(left) : te;
  for (int e = threadIdx.x; e < count; e += kThreads) xs[e] = g[start + e];
  __syncthreads();
  hidden_forward_tile(net, count, xs, acts, false, te, stage);

  // The last layer (one output): one warp per entry.
  const int last = net.layers - 1, h = net.in[last];
  const float* a = hidden_buffer(acts, last - 1, false, te, ld);
  const float* w = net.w[last];
  const float bias = net.b[last][0];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int e = warp; e < count; e += kThreads / kWarp) {
    float acc = 0.f;
    for (int j = lane; j < h; j += kWarp) acc = fmaf(w[j], a[e * ld + j], acc);
    acc = warp_sum(acc);
    if (lane == 0) ss[e] = acc + bias;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < count; e += kThreads) scores[start + e] = ss[e];
  if (warp == 0) {
    float m = -INFINITY;
    for (int e = lane; e < count; e += kWarp) m = fmaxf(m, ss[e]);
    m = warp_max(m);
    double z = 0.0, q = 0.0;
    for (int e = lane; e < count; e += kWarp) {
      const double ez = exp(static_cast<double>(ss[e]) - static_cast<double>(m));
      const double t = ez * static_cast<double>(xs[e]);
      z += ez;
      q += t * t;
    }
    z = warp_sum(z);
    q = warp_sum(q);
    if (lane == 0) {
      double* out = tile_stats + (batch.tile_base + tile) * 3;
      out[0] = m;
      out[1] = z;
      out[2] = q;
    }
  }
}

struct SoftmaxPartial {
  double m, z, q;  // max, sum exp(s - m), sum (exp(s - m) g)^2; z == 0: empty
};

__device__ __forceinline__ SoftmaxPartial merge(const SoftmaxPartial& a, const SoftmaxPartial& b) {
  if (b.z == 0.0) return a;
  if (a.z == 0.0) return b;
  const double m = fmax(a.m, b.m);
  const double fa = exp(a.m - m), fb = exp(b.m - m);
  return {m, a.z * fa + b.z * fb, a.q * fa * fa + b.q * fb * fb};
}

// Grid: one block per segment of the batch. stats[segment] = (max, sum exp(s - max), ||p g||).
__global__ void __launch_bounds__(kThreads) amp_stats_kernel(const double* tile_stats, Batch batch, float* stats) {
  __shared__ double sm[kThreads], sz[kThreads], sq[kThreads];
  const int s = blockIdx.x;
  const std::int64_t t0 = batch.tile_base + batch.first_tile[s], t1 = batch.tile_base + batch.first_tile[s + 1];
  SoftmaxPartial acc{-INFINITY, 0.0, 0.0};
  for (std::int64_t t = t0 + threadIdx.x; t < t1; t += kThreads) {
    acc = merge(acc, SoftmaxPartial{tile_stats[3 * t], tile_stats[3 * t + 1], tile_stats[3 * t + 2]});
  }
  sm[threadIdx.x] = acc.m;
  sz[threadIdx.x] = acc.z;
  sq[threadIdx.x] = acc.q;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) {
      const int o = threadIdx.x + stride;
      const SoftmaxPartial r = merge(SoftmaxPartial{sm[threadIdx.x], sz[threadIdx.x], sq[threadIdx.x]},
                                     SoftmaxPartial{sm[o], sz[o], sq[o]});
      sm[threadIdx.x] = r.m;
      sz[threadIdx.x] = r.z;
      sq[threadIdx.x] = r.q;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float* out = stats + static_cast<std::int64_t>(batch.first_segment + s) * 3;
    out[0] = static_cast<float>(sm[0]);
    out[1] = static_cast<float>(sz[0]);
    out[2] = static_cast<float>(sqrt(sq[0]) / sz[0]);
  }
}

// Grid (blocks along the longest segment, segments of the batch). out_i = c p_i g_i / ||p g||.
__global__ void amp_output_kernel(const float* g, const float* scores, const float* stats, Batch batch, float c,
                                  float* out) {
  const int s = blockIdx.y;
  const float* st = stats + static_cast<std::int64_t>(batch.first_segment + s) * 3;
  const float m = st[0], z = st[1], norm = st[2];
  const std::int64_t end = batch.begin[s] + batch.size[s];
  for (std::int64_t i = batch.begin[s] + blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < end;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float p = expf(scores[i] - m) / z;
    out[i] = norm != 0.0f ? c * (p * g[i]) / norm : 0.0f;  // all-zero gradient: zero; a NaN norm: NaN
  }
}

// ---------------------------------------------------------------- backward kernels

// Grid: one block per segment of the batch. dots[segment] = sum_j dout_j u_j, u = p g / ||p g||.
__global__ void __launch_bounds__(kDotThreads) amp_dot_kernel(const float* dout, const float* g, const float* scores,
                                                              const float* stats, Batch batch, double* dots) {
  __shared__ double scratch[kWarp];
  const int s = blockIdx.x;
  const std::int64_t segment = batch.first_segment + s;
  const double m = stats[segment * 3], z = stats[segment * 3 + 1], norm = stats[segment * 3 + 2];
  const double inv_norm = norm != 0.0 ? 1.0 / norm : 0.0;  // NaN stays NaN
  const std::int64_t begin = batch.begin[s], end = begin + batch.size[s];
  double acc = 0.0;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double p = exp(static_cast<double>(scores[i]) - m) / z;
    acc += static_cast<double>(dout[i]) * (p * static_cast<double>(g[i]) * inv_norm);
  }
  acc = block_reduce(acc, SumOp{}, scratch);
  if (threadIdx.x == 0) dots[segment] = acc;
}

// Entry i's ds_i = q_i dq_i and the part of dg_i outside the MLP, dq_i p_i, from the saved score, its
// segment's statistics (max, sum, norm) and dot A = sum_j dout_j u_j. In double, as the CPU kernel: dq
// is a difference of nearly equal terms whenever dout is close to parallel to u = q / ||q||, and
// c / ||q|| (large for small gradients) multiplies its rounding error.
struct EntryGrad {
  double ds, dg_outside;
};
__device__ __forceinline__ EntryGrad entry_grad(float dout, float x, float score, const float* stats, double dot,
                                                float c) {
  const double m = stats[0], z = stats[1], norm = stats[2];
  const double p = exp(static_cast<double>(score) - m) / z;
  const double q = p * x;
  const double inv_norm = norm != 0.0 ? 1.0 / norm : 0.0;  // zero gradient: zero derivatives; NaN stays NaN
  const double dq = (c * inv_norm) * (static_cast<double>(dout) - (q * inv_norm) * dot);
  return {q * dq, dq * p};
}

// Grid: min(kBackwardBlocks, tiles of the batch) blocks looping over the tiles. Dynamic shared
// memory: backward_smem_floats. partials: [kBackwardBlocks, net.params], block b adds into row b.
__global__ void __launch_bounds__(kThreads)
    amp_backward_kernel(const float* dout, const float* g, const float* scores, const float* stats,
                        const double* dots, Net net, Batch batch, float c, float* dg, double* partials) {
  extern __shared__ __align__(16) float smem[];
  const int te = batch.entries, ld = net.ld;
  const int last = net.layers - 1;
  // ds_i stays in double through the last layer's sums: they cancel (sum_i ds_i is exactly 0 per
  // segment), so float rounding of each term would leave noise of ~1e-7 x sum |ds| there.
  double* ds = reinterpret_cast<double*>(smem);                  // [te], first: 8-byte aligned
  float* stage = smem + 2 * te;
  float* xs = stage + kStageFloats;
  float* dg_direct = xs + te;
  float* acts = dg_direct + te;                                  // [last][te][ld]
  float* grad_a = acts + static_cast<std::int64_t>(last) * te * ld;  // [te][ld]
  float* grad_b = grad_a + static_cast<std::int64_t>(te) * ld;       // [te][ld]
  double* part = partials + static_cast<std::int64_t>(blockIdx.x) * net.params;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const std::int64_t tiles = batch.first_tile[batch.count];

  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int s = segment_of(batch, tile);
    const std::int64_t start = batch.begin[s] + (tile - batch.first_tile[s]) * te;
    const std::int64_t left = batch.begin[s] + batch.size[s] - start;
    const int count = left < te ? static_cast<int>(left) : te;
    const std::int64_t segment = batch.first_segment + s;

    if (static_cast<int>(threadIdx.x) < count) {
      const std::int64_t i = start + threadIdx.x;
      const EntryGrad d = entry_grad(dout[i], g[i], scores[i], stats + segment * 3, dots[segment], c);
      xs[threadIdx.x] = g[i];
      ds[threadIdx.x] = d.ds;
      dg_direct[threadIdx.x] = static_cast<float>(d.dg_outside);
    }
    __syncthreads();
    hidden_forward_tile(net, count, xs, acts, true, te, stage);

    // The last layer (one output): dw_j += sum_e ds_e a[e, j], db += sum_e ds_e; G = dZ of the last hidden layer.
    {
      const int h = net.in[last];
      const float* a = hidden_buffer(acts, last - 1, true, te, ld);
      const float* w = net.w[last];
      for (int j = threadIdx.x; j < h; j += kThreads) {
        double acc = 0.0;
        for (int e = 0; e < count; ++e) acc += ds[e] * a[e * ld + j];
        part[net.w_offset[last] + j] += acc;
      }
      if (threadIdx.x == 0) {
        double acc = 0.0;
        for (int e = 0; e < count; ++e) acc += ds[e];
        part[net.b_offset[last]] += acc;
      }
      for (int idx = threadIdx.x; idx < count * h; idx += kThreads) {
        const int e = idx / h, j = idx % h;
        grad_a[e * ld + j] = a[e * ld + j] > 0.f ? static_cast<float>(ds[e] * w[j]) : 0.f;
      }
    }
    __syncthreads();

    // Hidden x hidden layers, last to first: layer l maps hidden layer l - 1 (in) to hidden layer l (out).
    float* G = grad_a;
    float* G2 = grad_b;
    for (int l = last - 1; l >= 1; --l) {
      const int in = net.in[l], out = net.out[l];
      const float* a_in = hidden_buffer(acts, l - 1, true, te, ld);
      double* pw = part + net.w_offset[l];
      double* pb = part + net.b_offset[l];
      // dW[o, i] += sum_e G[e, o] a_in[e, i]
      block_gemm(out, in, count, Operand{G, 1, ld}, Operand{a_in, 1, ld}, stage,
                 [=](int r, int cc, float v) { pw[static_cast<std::int64_t>(r) * in + cc] += v; });
      for (int o = threadIdx.x; o < out; o += kThreads) {
        float acc = 0.f;
        for (int e = 0; e < count; ++e) acc += G[e * ld + o];
        pb[o] += acc;
      }
      // G2[e, i] = (sum_o G[e, o] W[o, i]) [a_in[e, i] > 0]
      float* next = G2;
      block_gemm(count, in, out, Operand{G, ld, 1}, Operand{net.w[l], 1, in}, stage,
                 [=](int r, int cc, float v) { next[r * ld + cc] = a_in[r * ld + cc] > 0.f ? v : 0.f; });
      G2 = G;
      G = next;
    }

    // The first layer (input width 1): dw_j += sum_e G[e, j] x_e, db_j += sum_e G[e, j]; dg_e (mlp) = sum_j G[e, j] w_j.
    {
      const int h = net.out[0];
      const float* w = net.w[0];
      for (int j = threadIdx.x; j < h; j += kThreads) {
        float acc_w = 0.f, acc_b = 0.f;
        for (int e = 0; e < count; ++e) {
          const float v = G[e * ld + j];
          acc_w = fmaf(v, xs[e], acc_w);
          acc_b += v;
        }
        part[net.w_offset[0] + j] += acc_w;
        part[net.b_offset[0] + j] += acc_b;
      }
      for (int e = warp; e < count; e += kThreads / kWarp) {
        float acc = 0.f;
        for (int j = lane; j < h; j += kWarp) acc = fmaf(G[e * ld + j], w[j], acc);
        acc = warp_sum(acc);
        if (lane == 0) dg[start + e] = dg_direct[e] + acc;
      }
    }
    __syncthreads();  // shared buffers are reused by the next tile
  }
}

// dW, db: the blocks' partial rows summed in block order (double). One thread per parameter.
__global__ void amp_grad_finish_kernel(const double* partials, int blocks, Net net, AmpGrads grads) {
  for (std::int64_t p = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; p < net.params;
       p += std::int64_t(gridDim.x) * blockDim.x) {
    double acc = 0.0;
    for (int b = 0; b < blocks; ++b) acc += partials[static_cast<std::int64_t>(b) * net.params + p];
    for (int l = 0; l < net.layers; ++l) {
      if (p < net.b_offset[l]) {
        grads.w[l][p - net.w_offset[l]] = static_cast<float>(acc);
        break;
      }
      if (p < net.b_offset[l] + net.out[l]) {
        grads.b[l][p - net.b_offset[l]] = static_cast<float>(acc);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------- pieces path kernels

// Grid: one block of kPieceTile threads per tile of the batch (batch.entries == kPieceTile). The
// scores from the pieces, and the tile's (max, sum exp(s - max), sum (exp(s - max) g)^2) as
// amp_forward_kernel writes them.
__global__ void __launch_bounds__(kPieceTile)
    amp_pieces_forward_kernel(const float* g, PieceLevels P, Batch batch, float* scores, double* tile_stats) {
  __shared__ float max_scratch[kWarp];
  __shared__ double sum_scratch[kWarp];
  const std::int64_t tile = blockIdx.x;
  const int s = segment_of(batch, tile);
  const std::int64_t start = batch.begin[s] + (tile - batch.first_tile[s]) * kPieceTile;
  const std::int64_t left = batch.begin[s] + batch.size[s] - start;
  const int count = left < kPieceTile ? static_cast<int>(left) : kPieceTile;
  const bool live = static_cast<int>(threadIdx.x) < count;
  const int last = P.layers - 1;
  float x = 0.f, score = -INFINITY;
  if (live) {
    x = g[start + threadIdx.x];
    const double xd = x;
    score = static_cast<float>(piece_score(P, piece_of(P.hi[last], P.count[last], xd), xd));
    scores[start + threadIdx.x] = score;
  }
  const float m = block_reduce(score, MaxOp{}, max_scratch);
  const double e = live ? exp(static_cast<double>(score) - static_cast<double>(m)) : 0.0;
  const double t = e * static_cast<double>(x);
  const double z = block_reduce(e, SumOp{}, sum_scratch);
  const double q = block_reduce(t * t, SumOp{}, sum_scratch);
  if (threadIdx.x == 0) {
    double* out = tile_stats + (batch.tile_base + tile) * 3;
    out[0] = m;
    out[1] = z;
    out[2] = q;
  }
}

// Grid (blocks along the longest segment, segments of the batch). Every entry of a segment: its
// piece (the key the weight gradients group by), ds, and dg = dq p + ds slope.
__global__ void amp_pieces_backward_kernel(const float* dout, const float* g, const float* scores, const float* stats,
                                           const double* dots, PieceLevels P, Batch batch, float c, float* dg) {
  const int s = blockIdx.y;
  const std::int64_t segment = batch.first_segment + s;
  const int last = P.layers - 1;
  const int pieces = P.count[last];
  const std::int64_t end = batch.begin[s] + batch.size[s];
  for (std::int64_t i = batch.begin[s] + blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < end;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const EntryGrad d = entry_grad(dout[i], g[i], scores[i], stats + segment * 3, dots[segment], c);
    const int m = piece_of(P.hi[last], pieces, static_cast<double>(g[i]));
    P.keys_in[i] = static_cast<std::uint32_t>(m);
    P.ds[i] = d.ds;
    dg[i] = static_cast<float>(d.dg_outside + d.ds * P.za[last][m]);
  }
}

}  // namespace

// ---------------------------------------------------------------- launchers

cudaError_t configure_amplifier_kernels(int max_optin_smem, int& limit) {
  if (max_optin_smem <= 0) return cudaErrorInvalidValue;
  TG_RETURN_IF_ERROR(
      cudaFuncSetAttribute(amp_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_optin_smem));
  TG_RETURN_IF_ERROR(
      cudaFuncSetAttribute(amp_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_optin_smem));
  limit = max_optin_smem;
  return cudaSuccess;
}

int amplifier_tile_entries(const AmpMlp& mlp, int smem_limit) {
  if (mlp.layers < 2 || mlp.layers > kMaxAmpLayers) return 0;
  const Net net = make_net(mlp);
  for (int te = kTileRows; te >= 1; te /= 2) {
    const std::size_t limit = smem_limit > 0 ? static_cast<std::size_t>(smem_limit) : 0;
    if (backward_smem_floats(net, te) * sizeof(float) <= limit && forward_smem_floats(net, te) * sizeof(float) <= limit) {
      return te;
    }
  }
  return 0;
}

namespace {

std::int64_t tiles_of_segments(const std::int64_t* seg_size, std::int64_t segments, int entries) {
  std::int64_t tiles = 0;
  for (std::int64_t k = 0; k < segments; ++k) tiles += tiles_of(seg_size[k], entries);
  return tiles;
}

}  // namespace

std::size_t neural_amplify_forward_workspace_bytes(const AmpMlp& mlp, const std::int64_t* seg_size,
                                                   std::int64_t segments, int tile_entries, bool pieces) {
  const int entries = pieces ? kPieceTile : tile_entries;
  if (entries <= 0) return 0;
  const std::size_t stats = align_up(static_cast<std::size_t>(tiles_of_segments(seg_size, segments, entries)) * 3 *
                                     sizeof(double));
  return pieces ? stats + amplifier_pieces_bytes(mlp, 0) : stats;
}

cudaError_t launch_neural_amplify_forward(const float* g, std::int64_t n, const AmpMlp& mlp,
                                          const std::int64_t* seg_begin, const std::int64_t* seg_size,
                                          std::int64_t segments, float c, int tile_entries, bool pieces, float* out,
                                          float* scores, float* stats, void* workspace, std::size_t workspace_bytes,
                                          cudaStream_t stream) {
  if (mlp.layers < 2 || mlp.layers > kMaxAmpLayers) return cudaErrorInvalidValue;
  if (pieces ? (!amplifier_pieces_supported(mlp) || amplifier_pieces_bytes(mlp, 0) == 0)
             : (tile_entries < 1 || tile_entries > kTileRows)) {
    return cudaErrorInvalidValue;
  }
  if (n > 0) TG_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<std::size_t>(n) * sizeof(float), stream));
  if (segments <= 0) return cudaSuccess;
  if (workspace_bytes < neural_amplify_forward_workspace_bytes(mlp, seg_size, segments, tile_entries, pieces)) {
    return cudaErrorInvalidValue;
  }
  const int entries = pieces ? kPieceTile : tile_entries;
  double* tile_stats = static_cast<double*>(workspace);
  const std::size_t stats_bytes =
      align_up(static_cast<std::size_t>(tiles_of_segments(seg_size, segments, entries)) * 3 * sizeof(double));
  PieceLevels levels;
  if (pieces) {
    levels = amplifier_pieces_layout(mlp, 0, static_cast<char*>(workspace) + stats_bytes);
    TG_RETURN_IF_ERROR(launch_amplifier_pieces_build(levels, stream));
  }
  const Net net = make_net(mlp);
  const std::size_t smem = pieces ? 0 : forward_smem_floats(net, tile_entries) * sizeof(float);
  std::int64_t tile_base = 0;
  for (std::int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
    const std::int64_t count = segments - first < kSegmentsPerLaunch ? segments - first : kSegmentsPerLaunch;
    const Batch batch = make_batch(seg_begin, seg_size, first, count, entries, tile_base);
    const std::int64_t tiles = batch.first_tile[count];
    if (tiles > 0x7fffffff) return cudaErrorInvalidConfiguration;
    std::int64_t longest = 0;
    for (std::int64_t k = 0; k < count; ++k) longest = batch.size[k] > longest ? batch.size[k] : longest;
    if (pieces) {
      amp_pieces_forward_kernel<<<static_cast<unsigned>(tiles), kPieceTile, 0, stream>>>(g, levels, batch, scores,
                                                                                           tile_stats);
    } else {
      amp_forward_kernel<<<static_cast<unsigned>(tiles), kThreads, smem, stream>>>(g, net, batch, scores, tile_stats);
    }
    TG_RETURN_IF_LAUNCH_FAILED();
    amp_stats_kernel<<<static_cast<unsigned>(count), kThreads, 0, stream>>>(tile_stats, batch, stats);
    TG_RETURN_IF_LAUNCH_FAILED();
    const dim3 grid(grid_for(longest, kThreads, 1024), static_cast<unsigned>(count));
    amp_output_kernel<<<grid, kThreads, 0, stream>>>(g, scores, stats, batch, c, out);
    TG_RETURN_IF_LAUNCH_FAILED();
    tile_base += tiles;
  }
  return cudaSuccess;
}

std::size_t neural_amplify_backward_workspace_bytes(const AmpMlp& mlp, std::int64_t n, std::int64_t segments,
                                                    bool pieces) {
  if (mlp.layers < 2 || mlp.layers > kMaxAmpLayers) return 0;
  const std::size_t dots = align_up(static_cast<std::size_t>(segments > 0 ? segments : 1) * sizeof(double));
  if (pieces) return dots + amplifier_pieces_bytes(mlp, n > 0 ? n : 1);
  const Net net = make_net(mlp);
  return dots + align_up(static_cast<std::size_t>(kBackwardBlocks) * static_cast<std::size_t>(net.params) * sizeof(double));
}

cudaError_t launch_neural_amplify_backward(const float* dout, const float* g, std::int64_t n, const AmpMlp& mlp,
                                           const std::int64_t* seg_begin, const std::int64_t* seg_size,
                                           std::int64_t segments, float c, int tile_entries, bool pieces,
                                           const float* scores, const float* stats, float* dg, const AmpGrads& grads,
                                           void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  if (mlp.layers < 2 || mlp.layers > kMaxAmpLayers) return cudaErrorInvalidValue;
  if (pieces ? (!amplifier_pieces_supported(mlp) || n > 0x7fffffff || amplifier_pieces_bytes(mlp, n > 0 ? n : 1) == 0)
             : (tile_entries < 1 || tile_entries > kTileRows)) {
    return cudaErrorInvalidValue;
  }
  if (workspace_bytes < neural_amplify_backward_workspace_bytes(mlp, n, segments, pieces)) return cudaErrorInvalidValue;
  double* dots = static_cast<double*>(workspace);
  char* after_dots = static_cast<char*>(workspace) +
                     align_up(static_cast<std::size_t>(segments > 0 ? segments : 1) * sizeof(double));
  if (n > 0) TG_RETURN_IF_ERROR(cudaMemsetAsync(dg, 0, static_cast<std::size_t>(n) * sizeof(float), stream));

  if (pieces) {
    // Every entry outside the segments keeps the "no piece" key; with no entries at all the piece
    // sums are zero and so is every weight gradient.
    const PieceLevels levels = amplifier_pieces_layout(mlp, n > 0 ? n : 1, after_dots);
    TG_RETURN_IF_ERROR(launch_amplifier_pieces_build(levels, stream));
    TG_RETURN_IF_ERROR(launch_amplifier_pieces_clear_keys(levels, stream));
    for (std::int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
      const std::int64_t count = segments - first < kSegmentsPerLaunch ? segments - first : kSegmentsPerLaunch;
      const Batch batch = make_batch(seg_begin, seg_size, first, count, kPieceTile, 0);
      std::int64_t longest = 0;
      for (std::int64_t k = 0; k < count; ++k) longest = batch.size[k] > longest ? batch.size[k] : longest;
      amp_dot_kernel<<<static_cast<unsigned>(count), kDotThreads, 0, stream>>>(dout, g, scores, stats, batch, dots);
      TG_RETURN_IF_LAUNCH_FAILED();
      const dim3 grid(grid_for(longest, kThreads, 1024), static_cast<unsigned>(count));
      amp_pieces_backward_kernel<<<grid, kThreads, 0, stream>>>(dout, g, scores, stats, dots, levels, batch, c, dg);
      TG_RETURN_IF_LAUNCH_FAILED();
    }
    return launch_amplifier_pieces_weight_gradients(levels, g, grads, stream);
  }

  const Net net = make_net(mlp);
  const std::size_t smem = backward_smem_floats(net, tile_entries) * sizeof(float);
  double* partials = reinterpret_cast<double*>(after_dots);
  TG_RETURN_IF_ERROR(cudaMemsetAsync(
      partials, 0, static_cast<std::size_t>(kBackwardBlocks) * static_cast<std::size_t>(net.params) * sizeof(double),
      stream));
  for (std::int64_t first = 0; first < segments; first += kSegmentsPerLaunch) {
    const std::int64_t count = segments - first < kSegmentsPerLaunch ? segments - first : kSegmentsPerLaunch;
    const Batch batch = make_batch(seg_begin, seg_size, first, count, tile_entries, 0);
    const std::int64_t tiles = batch.first_tile[count];
    amp_dot_kernel<<<static_cast<unsigned>(count), kDotThreads, 0, stream>>>(dout, g, scores, stats, batch, dots);
    TG_RETURN_IF_LAUNCH_FAILED();
    const unsigned blocks = static_cast<unsigned>(tiles < kBackwardBlocks ? tiles : kBackwardBlocks);
    amp_backward_kernel<<<blocks, kThreads, smem, stream>>>(dout, g, scores, stats, dots, net, batch, c, dg,
                                                            partials);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  amp_grad_finish_kernel<<<grid_for(net.params, kThreads), kThreads, 0, stream>>>(partials, kBackwardBlocks, net,
                                                                                   grads);
  return cudaGetLastError();
}

}  // namespace tg::cuda

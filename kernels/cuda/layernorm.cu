// LayerNorm over rows: y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) with the
// biased variance; mean and rstd are saved for backward. The add_layernorm variant first forms the
// row h = x + residual (writing it out) and normalises h; its backward adds the gradient of h to dx. Statistics accumulate in double as on the
// CPU.
//
// Forward and dx: one warp per row (8 rows per 256-thread block), lane l handles columns
// l, l + 32, ...; warp sums by butterfly.
// dgamma, dbeta: a deterministic two-stage reduction over rows, no atomics. Stage 1: the rows are
// cut into `chunks` fixed ranges; block (column tile of 32, chunk) sums its range per column
// (threadIdx.y takes every 8th row, then a fixed shared-memory tree) into partials [chunks, C].
// Stage 2: one thread per column adds the chunk partials in chunk order (reduce.cu's
// launch_sum_chunk_partials).
// Second order (layernorm_double_backward): the same shapes of work, one warp per row for ddy and dx,
// then the two-stage column reduction for dgamma from per-row statistics the row kernel leaves.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;
constexpr int kTileCols = 32;  // stage-1 block: 32 columns x 8 row lanes
constexpr int kTileRows = 8;

// x, y: [rows, c]; gamma, beta: [c]; mean, rstd: [rows]. kAddResidual: the row normalised is
// h = x + residual ([rows, c]), written to sum_out ([rows, c]) on the way; each lane later reads back
// only the columns it wrote itself, so no synchronisation is needed.
template <bool kAddResidual>
__global__ void layernorm_forward_kernel(const float* x, const float* residual, const float* gamma, const float* beta,
                                         float eps, float* sum_out, float* y, float* mean, float* rstd,
                                         std::int64_t rows, std::int64_t c) {
  const int lane = threadIdx.x % kWarp;
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* xr = x + row * c;
    float* yr = y + row * c;
    double sum = 0.0;
    if constexpr (kAddResidual) {
      const float* rr = residual + row * c;
      float* hr = sum_out + row * c;
      for (std::int64_t i = lane; i < c; i += kWarp) {
        const float h = xr[i] + rr[i];
        hr[i] = h;
        sum += h;
      }
      xr = hr;
    } else {
      for (std::int64_t i = lane; i < c; i += kWarp) sum += xr[i];
    }
    const double m = warp_sum(sum) / static_cast<double>(c);
    double var = 0.0;
    for (std::int64_t i = lane; i < c; i += kWarp) {
      const double d = xr[i] - m;
      var += d * d;
    }
    var = warp_sum(var) / static_cast<double>(c);
    const double s = 1.0 / sqrt(var + static_cast<double>(eps));
    for (std::int64_t i = lane; i < c; i += kWarp) yr[i] = static_cast<float>((xr[i] - m) * s) * gamma[i] + beta[i];
    if (lane == 0) {
      mean[row] = static_cast<float>(m);
      rstd[row] = static_cast<float>(s);
    }
  }
}

// With xhat = (x - mean) * rstd and g = dy * gamma: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
// plus dsum when given. dy, x, dsum (may be null), dx: [rows, c]; gamma: [c]; mean, rstd: [rows]
__global__ void layernorm_backward_dx_kernel(const float* dy, const float* x, const float* gamma, const float* mean,
                                             const float* rstd, const float* dsum, float* dx, std::int64_t rows,
                                             std::int64_t c) {
  const int lane = threadIdx.x % kWarp;
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* dyr = dy + row * c;
    const float* xr = x + row * c;
    float* dxr = dx + row * c;
    const double m = mean[row], s = rstd[row];
    double g_sum = 0.0, gx_sum = 0.0;
    for (std::int64_t i = lane; i < c; i += kWarp) {
      const double xhat = (xr[i] - m) * s;
      const double g = double(dyr[i]) * double(gamma[i]);
      g_sum += g;
      gx_sum += g * xhat;
    }
    const double g_mean = warp_sum(g_sum) / static_cast<double>(c);
    const double gx_mean = warp_sum(gx_sum) / static_cast<double>(c);
    for (std::int64_t i = lane; i < c; i += kWarp) {
      const double xhat = (xr[i] - m) * s;
      const double g = double(dyr[i]) * double(gamma[i]);
      float v = static_cast<float>(s * (g - g_mean - xhat * gx_mean));
      if (dsum != nullptr) v += dsum[row * c + i];  // rounded as the CPU's separate add
      dxr[i] = v;
    }
  }
}

// Sums v over the kTileRows row lanes of each column of a stage-1 block by a fixed tree (the same
// bits every run); every thread gets its column's sum. Every thread of the block calls it, each call
// with its own `tile`, so no barrier is needed before the first store.
__device__ double column_tile_sum(double v, double (&tile)[kTileRows][kTileCols]) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  tile[ty][tx] = v;
  __syncthreads();
  for (int s = kTileRows / 2; s > 0; s >>= 1) {
    if (ty < s) tile[ty][tx] += tile[ty + s][tx];
    __syncthreads();
  }
  return tile[0][tx];
}

// Stage 1. dy, x: [rows, c]; mean, rstd: [rows] -> part_dgamma, part_dbeta: [chunks, c], chunk k
// covering rows [k * rows_per_chunk, min(rows, (k + 1) * rows_per_chunk)). Grid (column tiles, chunks).
__global__ void layernorm_param_partials_kernel(const float* dy, const float* x, const float* mean, const float* rstd,
                                                double* part_dgamma, double* part_dbeta, std::int64_t rows,
                                                std::int64_t c, std::int64_t rows_per_chunk) {
  __shared__ double sg[kTileRows][kTileCols];
  __shared__ double sb[kTileRows][kTileCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t col = blockIdx.x * std::int64_t(kTileCols) + tx;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t r0 = chunk * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double dg = 0.0, db = 0.0;
  if (col < c) {
    for (std::int64_t r = r0 + ty; r < r1; r += kTileRows) {
      const double d = dy[r * c + col];
      const double xhat = (x[r * c + col] - double(mean[r])) * double(rstd[r]);
      dg += d * xhat;
      db += d;
    }
  }
  dg = column_tile_sum(dg, sg);
  db = column_tile_sum(db, sb);
  if (ty == 0 && col < c) {
    part_dgamma[chunk * c + col] = dg;
    part_dbeta[chunk * c + col] = db;
  }
}

// Second order, one warp per row: ga (a gradient of dx) with gg, gb (of dgamma, dbeta) -> ddy, dx2 (the
// formulas are those of the CPU's layernorm_double_backward). Also leaves each row's mean(a) and
// mean(a * xhat) in a_mean, axhat_mean for the dgamma2 reduction. dy, x, ga, ddy, dx2: [rows, c].
__global__ void __launch_bounds__(kThreads)
    layernorm_double_backward_rows_kernel(const float* dy, const float* x, const float* gamma, const float* mean,
                                          const float* rstd, const float* ga, const float* gg, const float* gb,
                                          float* ddy, float* dx2, double* a_mean, double* axhat_mean,
                                          std::int64_t rows, std::int64_t c) {
  const int lane = threadIdx.x % kWarp;
  const double inv_c = 1.0 / static_cast<double>(c);
  for (std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + threadIdx.x / kWarp; row < rows;
       row += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const float* dyr = dy + row * c;
    const float* xr = x + row * c;
    const float* ar = ga + row * c;
    const double m = mean[row], s = rstd[row];
    double sg = 0, sgx = 0, sa = 0, sax = 0, sag = 0, sbd = 0, sbdx = 0, sx = 0;
    for (std::int64_t i = lane; i < c; i += kWarp) {
      const double xhat = (xr[i] - m) * s, g = double(dyr[i]) * double(gamma[i]), a = ar[i];
      const double bd = double(gg[i]) * double(dyr[i]);
      sg += g;
      sgx += g * xhat;
      sa += a;
      sax += a * xhat;
      sag += a * g;
      sbd += bd;
      sbdx += bd * xhat;
      sx += xhat;
    }
    const double g_mean = warp_sum(sg) * inv_c, gx_mean = warp_sum(sgx) * inv_c;
    const double a_m = warp_sum(sa) * inv_c, ax_mean = warp_sum(sax) * inv_c;
    const double ag_mean = warp_sum(sag) * inv_c, bd_mean = warp_sum(sbd) * inv_c;
    const double bdx_mean = warp_sum(sbdx) * inv_c, xhat_mean = warp_sum(sx) * inv_c;
    const double adx_mean = s * (ag_mean - a_m * g_mean - ax_mean * gx_mean);
    const double u = (bdx_mean - 2.0 * s * ax_mean * gx_mean) + adx_mean;
    const double centre = s * ((bd_mean - s * (a_m * gx_mean + g_mean * ax_mean)) - xhat_mean * u);
    for (std::int64_t i = lane; i < c; i += kWarp) {
      const double xhat = (xr[i] - m) * s, g = double(dyr[i]) * double(gamma[i]), a = ar[i];
      const double q = s * (a - a_m - xhat * ax_mean);
      ddy[row * c + i] = static_cast<float>(double(gb[i]) + double(gg[i]) * xhat + double(gamma[i]) * q);
      const double big_x = double(gg[i]) * double(dyr[i]) - s * (a * gx_mean + g * ax_mean);
      dx2[row * c + i] = static_cast<float>(s * (big_x - xhat * u) - centre);
    }
    if (lane == 0) {
      a_mean[row] = a_m;
      axhat_mean[row] = ax_mean;
    }
  }
}

// Stage 1 of dgamma2 = sum over rows of rstd * (a - mean(a) - xhat * mean(a * xhat)) * dy, as
// layernorm_param_partials_kernel: part [chunks, c]. Grid (column tiles, chunks), block (32, 8).
__global__ void layernorm_gamma2_partials_kernel(const float* dy, const float* x, const float* mean, const float* rstd,
                                                 const float* ga, const double* a_mean, const double* axhat_mean,
                                                 double* part, std::int64_t rows, std::int64_t c,
                                                 std::int64_t rows_per_chunk) {
  __shared__ double sp[kTileRows][kTileCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t col = blockIdx.x * std::int64_t(kTileCols) + tx;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t r0 = chunk * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double acc = 0.0;
  if (col < c) {
    for (std::int64_t r = r0 + ty; r < r1; r += kTileRows) {
      const double s = rstd[r];
      const double xhat = (x[r * c + col] - double(mean[r])) * s;
      acc += s * (double(ga[r * c + col]) - a_mean[r] - xhat * axhat_mean[r]) * double(dy[r * c + col]);
    }
  }
  acc = column_tile_sum(acc, sp);
  if (ty == 0 && col < c) part[chunk * c + col] = acc;
}

// The fixed split of the rows for stage 1: chunks of 128 rows, at most 256 chunks.
void chunking(std::int64_t rows, std::int64_t& rows_per_chunk, std::int64_t& chunks) {
  constexpr std::int64_t kPreferredRows = 128, kMaxChunks = 256;
  rows_per_chunk = kPreferredRows;
  if (rows > kPreferredRows * kMaxChunks) rows_per_chunk = (rows + kMaxChunks - 1) / kMaxChunks;
  chunks = rows > 0 ? (rows + rows_per_chunk - 1) / rows_per_chunk : 1;
}

}  // namespace

cudaError_t launch_layernorm_forward(const float* x, const float* gamma, const float* beta, float eps, float* y,
                                     float* mean, float* rstd, std::int64_t rows, std::int64_t c,
                                     cudaStream_t stream) {
  if (rows <= 0 || c <= 0) return cudaSuccess;
  layernorm_forward_kernel<false><<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(
      x, nullptr, gamma, beta, eps, nullptr, y, mean, rstd, rows, c);
  return cudaGetLastError();
}

cudaError_t launch_add_layernorm_forward(const float* x, const float* residual, const float* gamma, const float* beta,
                                         float eps, float* sum, float* y, float* mean, float* rstd, std::int64_t rows,
                                         std::int64_t c, cudaStream_t stream) {
  if (rows <= 0 || c <= 0) return cudaSuccess;
  layernorm_forward_kernel<true><<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(
      x, residual, gamma, beta, eps, sum, y, mean, rstd, rows, c);
  return cudaGetLastError();
}

std::size_t layernorm_backward_workspace_bytes(std::int64_t rows, std::int64_t c) {
  std::int64_t rows_per_chunk = 0, chunks = 0;
  chunking(rows, rows_per_chunk, chunks);
  return static_cast<std::size_t>(2 * chunks * (c > 0 ? c : 1)) * sizeof(double);
}

cudaError_t launch_layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                                      const float* rstd, const float* dsum, float* dx, float* dgamma, float* dbeta,
                                      std::int64_t rows, std::int64_t c, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  if (workspace_bytes < layernorm_backward_workspace_bytes(rows, c)) return cudaErrorInvalidValue;
  if (rows > 0) {
    layernorm_backward_dx_kernel<<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(dy, x, gamma, mean, rstd, dsum,
                                                                                         dx, rows, c);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  std::int64_t rows_per_chunk = 0, chunks = 0;
  chunking(rows, rows_per_chunk, chunks);
  double* part_dgamma = static_cast<double*>(workspace);
  double* part_dbeta = part_dgamma + chunks * c;
  const dim3 grid(static_cast<unsigned>((c + kTileCols - 1) / kTileCols), static_cast<unsigned>(chunks));
  layernorm_param_partials_kernel<<<grid, dim3(kTileCols, kTileRows), 0, stream>>>(
      dy, x, mean, rstd, part_dgamma, part_dbeta, rows, c, rows_per_chunk);
  TG_RETURN_IF_LAUNCH_FAILED();
  return launch_sum_chunk_partials(part_dgamma, dgamma, chunks, c, stream, part_dbeta, dbeta);
}

// Workspace: the per-row statistics (2 x rows doubles), then the stage-1 partials (chunks x c doubles).
std::size_t layernorm_double_backward_workspace_bytes(std::int64_t rows, std::int64_t c) {
  std::int64_t rows_per_chunk = 0, chunks = 0;
  chunking(rows, rows_per_chunk, chunks);
  return static_cast<std::size_t>(2 * (rows > 0 ? rows : 0) + chunks * (c > 0 ? c : 1)) * sizeof(double);
}

cudaError_t launch_layernorm_double_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                                             const float* rstd, const float* ga, const float* gg, const float* gb,
                                             float* ddy, float* dx2, float* dgamma2, std::int64_t rows,
                                             std::int64_t c, void* workspace, std::size_t workspace_bytes,
                                             cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  if (workspace_bytes < layernorm_double_backward_workspace_bytes(rows, c)) return cudaErrorInvalidValue;
  double* a_mean = static_cast<double*>(workspace);
  double* axhat_mean = a_mean + rows;
  double* part = axhat_mean + rows;
  if (rows > 0) {
    layernorm_double_backward_rows_kernel<<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(
        dy, x, gamma, mean, rstd, ga, gg, gb, ddy, dx2, a_mean, axhat_mean, rows, c);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  std::int64_t rows_per_chunk = 0, chunks = 0;
  chunking(rows, rows_per_chunk, chunks);
  const dim3 grid(static_cast<unsigned>((c + kTileCols - 1) / kTileCols), static_cast<unsigned>(chunks));
  layernorm_gamma2_partials_kernel<<<grid, dim3(kTileCols, kTileRows), 0, stream>>>(
      dy, x, mean, rstd, ga, a_mean, axhat_mean, part, rows, c, rows_per_chunk);
  TG_RETURN_IF_LAUNCH_FAILED();
  return launch_sum_chunk_partials(part, dgamma2, chunks, c, stream);
}

}  // namespace tg::cuda

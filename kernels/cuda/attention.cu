// Fused causal multi-head self-attention on packed qkv [B, T, 3C]: head h of q is
// qkv[b, t, h*D : (h+1)*D], of k the same at offset C, of v at offset 2C; D = C / H; scores scaled
// by 1/sqrt(D); probs [B, H, T, T] saved for backward with zeros above the diagonal.
//
// Short sequences (T <= 64 and the head fits in shared memory): one block per (b, h) keeps the
// head's q, k, v (rows padded to D + 1 floats against bank conflicts) and the T x T scores in
// shared memory, and computes scores, causal softmax, probs and y in one launch; backward likewise
// computes dq, dk, dv of the head in one launch.
//
// Longer sequences: one block per query row (b, h, i) computes that row's scores, softmax and
// output; backward runs one block per query row (dS row and dq, with dS stored in a scratch
// [B, H, T, T]) and then one block per key row (b, h, j) for dk and dv.
//
// Determinism: every output element is owned by one thread, which sums its terms in index order;
// row statistics use the warp butterfly or the fixed block reduction of common.cuh. No atomics.
#include "kernels/cuda/common.cuh"

namespace tg::cuda {

namespace {

constexpr int kShortMaxT = 64;
constexpr int kRowThreads = 128;

std::size_t short_forward_smem(std::int64_t t, std::int64_t d) {
  return static_cast<std::size_t>(3 * t * (d + 1) + t * t) * sizeof(float);
}
std::size_t short_backward_smem(std::int64_t t, std::int64_t d) {
  return static_cast<std::size_t>(4 * t * (d + 1) + 2 * t * t) * sizeof(float);
}
std::size_t row_smem(std::int64_t d) { return static_cast<std::size_t>(d) * sizeof(float); }
bool use_short_forward(std::int64_t t, std::int64_t d, const KernelLimits& limits) {
  return t <= kShortMaxT && short_forward_smem(t, d) <= static_cast<std::size_t>(limits.attention_short_forward);
}
bool use_short_backward(std::int64_t t, std::int64_t d, const KernelLimits& limits) {
  return t <= kShortMaxT && short_backward_smem(t, d) <= static_cast<std::size_t>(limits.attention_short_backward);
}
int short_threads(std::int64_t t, std::int64_t d) { return t * d >= 2048 ? 256 : 128; }

// ---------------------------------------------------------------- short sequences

// qkv: [B, T, 3C]; y: [B, T, C]; probs: [B, H, T, T]. Grid B*H, one block per head.
__global__ void attention_forward_short_kernel(const float* qkv, float* y, float* probs, int T, int C, int H, int D,
                                               float scale) {
  extern __shared__ float smem[];
  const int Dp = D + 1;
  float* q = smem;        // [T][Dp]
  float* k = q + T * Dp;  // [T][Dp]
  float* v = k + T * Dp;  // [T][Dp]
  float* s = v + T * Dp;  // [T][T] scores, then probabilities
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const float* head = qkv + std::int64_t(b) * T * C3 + std::int64_t(h) * D;

  for (int idx = tid; idx < T * D; idx += nthreads) {
    const int t = idx / D, e = idx % D;
    const float* row = head + t * C3;
    q[t * Dp + e] = row[e];
    k[t * Dp + e] = row[C + e];
    v[t * Dp + e] = row[2 * C + e];
  }
  __syncthreads();

  // scores s[i][j] = q_i . k_j * scale for j <= i
  for (int idx = tid; idx < T * T; idx += nthreads) {
    const int i = idx / T, j = idx % T;
    if (j <= i) {
      float acc = 0.f;
      for (int e = 0; e < D; ++e) acc = fmaf(q[i * Dp + e], k[j * Dp + e], acc);
      s[idx] = acc * scale;
    }
  }
  __syncthreads();

  // causal softmax, one warp per row; probs written with zeros above the diagonal
  const int lane = tid % kWarp, warp = tid / kWarp, warps = nthreads / kWarp;
  for (int i = warp; i < T; i += warps) {
    float* si = s + i * T;
    float max = -INFINITY;
    for (int j = lane; j <= i; j += kWarp) max = fmaxf(max, si[j]);
    max = warp_max(max);
    float sum = 0.f;
    for (int j = lane; j <= i; j += kWarp) {
      const float e = expf(si[j] - max);
      si[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    float* pi = probs + (std::int64_t(bh) * T + i) * T;
    for (int j = lane; j < T; j += kWarp) {
      const float p = j <= i ? si[j] / sum : 0.f;
      si[j] = p;
      pi[j] = p;
    }
  }
  __syncthreads();

  // y_i = sum_{j <= i} p_ij v_j
  float* yb = y + std::int64_t(b) * T * C + std::int64_t(h) * D;
  for (int idx = tid; idx < T * D; idx += nthreads) {
    const int i = idx / D, e = idx % D;
    float acc = 0.f;
    for (int j = 0; j <= i; ++j) acc = fmaf(s[i * T + j], v[j * Dp + e], acc);
    yb[std::int64_t(i) * C + e] = acc;
  }
}

// With P the probabilities, dP = dY V^T, dS = P * (dP - rowsum(P * dP)) * scale:
//   dV = P^T dY,  dQ = dS K,  dK = dS^T Q.
// dy: [B, T, C]; qkv, dqkv: [B, T, 3C]; probs: [B, H, T, T]. Grid B*H, one block per head; writes
// every element of the head's slices of dqkv.
__global__ void attention_backward_short_kernel(const float* dy, const float* qkv, const float* probs, float* dqkv,
                                                int T, int C, int H, int D, float scale) {
  extern __shared__ float smem[];
  const int Dp = D + 1;
  float* q = smem;          // [T][Dp]
  float* k = q + T * Dp;    // [T][Dp]
  float* v = k + T * Dp;    // [T][Dp]
  float* g = v + T * Dp;    // [T][Dp] dy of the head
  float* P = g + T * Dp;    // [T][T]
  float* S = P + T * T;     // [T][T] dP, then dS
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const float* head = qkv + std::int64_t(b) * T * C3 + std::int64_t(h) * D;
  const float* dy_head = dy + std::int64_t(b) * T * C + std::int64_t(h) * D;
  float* dhead = dqkv + std::int64_t(b) * T * C3 + std::int64_t(h) * D;
  const float* probs_head = probs + std::int64_t(bh) * T * T;

  for (int idx = tid; idx < T * D; idx += nthreads) {
    const int t = idx / D, e = idx % D;
    const float* row = head + t * C3;
    q[t * Dp + e] = row[e];
    k[t * Dp + e] = row[C + e];
    v[t * Dp + e] = row[2 * C + e];
    g[t * Dp + e] = dy_head[std::int64_t(t) * C + e];
  }
  for (int idx = tid; idx < T * T; idx += nthreads) {
    const int i = idx / T, j = idx % T;
    P[idx] = j <= i ? probs_head[idx] : 0.f;
  }
  __syncthreads();

  // dv_j = sum_{i >= j} p_ij dy_i;  dP_ij = dy_i . v_j (j <= i)
  for (int idx = tid; idx < T * D; idx += nthreads) {
    const int j = idx / D, e = idx % D;
    float acc = 0.f;
    for (int i = j; i < T; ++i) acc = fmaf(P[i * T + j], g[i * Dp + e], acc);
    dhead[std::int64_t(j) * C3 + 2 * C + e] = acc;
  }
  for (int idx = tid; idx < T * T; idx += nthreads) {
    const int i = idx / T, j = idx % T;
    float acc = 0.f;
    if (j <= i) {
      for (int e = 0; e < D; ++e) acc = fmaf(g[i * Dp + e], v[j * Dp + e], acc);
    }
    S[idx] = acc;
  }
  __syncthreads();

  // dS_ij = p_ij (dP_ij - sum_j' p_ij' dP_ij') * scale, one warp per row
  const int lane = tid % kWarp, warp = tid / kWarp, warps = nthreads / kWarp;
  for (int i = warp; i < T; i += warps) {
    float part = 0.f;
    for (int j = lane; j <= i; j += kWarp) part = fmaf(P[i * T + j], S[i * T + j], part);
    const float row = warp_sum(part);
    for (int j = lane; j <= i; j += kWarp) S[i * T + j] = P[i * T + j] * (S[i * T + j] - row) * scale;
  }
  __syncthreads();

  // dq_t = sum_{j <= t} dS_tj k_j;  dk_t = sum_{i >= t} dS_it q_i
  for (int idx = tid; idx < T * D; idx += nthreads) {
    const int t = idx / D, e = idx % D;
    float dq = 0.f, dk = 0.f;
    for (int j = 0; j <= t; ++j) dq = fmaf(S[t * T + j], k[j * Dp + e], dq);
    for (int i = t; i < T; ++i) dk = fmaf(S[i * T + t], q[i * Dp + e], dk);
    dhead[std::int64_t(t) * C3 + e] = dq;
    dhead[std::int64_t(t) * C3 + C + e] = dk;
  }
}

// ---------------------------------------------------------------- any sequence length

// One block per query row (b, h, i); grid B*H*T. Dynamic shared memory: q_i [D].
__global__ void attention_forward_row_kernel(const float* qkv, float* y, float* probs, int T, int C, int H, int D,
                                             float scale) {
  extern __shared__ float qi[];
  __shared__ float scratch[kWarp];
  const std::int64_t row = blockIdx.x;  // (b * H + h) * T + i
  const int i = static_cast<int>(row % T);
  const std::int64_t bh = row / T;
  const std::int64_t b = bh / H, h = bh % H;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const float* head = qkv + b * T * C3 + h * D;

  for (int e = tid; e < D; e += nthreads) qi[e] = head[i * C3 + e];
  __syncthreads();

  // Thread tid owns columns j = tid, tid + nthreads, ... of the probs row through every pass.
  float* pr = probs + row * T;
  float max = -INFINITY;
  for (int j = tid; j < T; j += nthreads) {
    if (j <= i) {
      const float* kj = head + j * C3 + C;
      float acc = 0.f;
      for (int e = 0; e < D; ++e) acc = fmaf(qi[e], kj[e], acc);
      const float s = acc * scale;
      pr[j] = s;
      max = fmaxf(max, s);
    } else {
      pr[j] = 0.f;
    }
  }
  max = block_reduce(max, MaxOp{}, scratch);
  float sum = 0.f;
  for (int j = tid; j <= i; j += nthreads) {
    const float e = expf(pr[j] - max);
    pr[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, SumOp{}, scratch);
  for (int j = tid; j <= i; j += nthreads) pr[j] = pr[j] / sum;
  __syncthreads();  // the whole probs row is read below

  float* yi = y + (b * T + i) * C + h * D;
  for (int e = tid; e < D; e += nthreads) {
    float acc = 0.f;
    for (int j = 0; j <= i; ++j) acc = fmaf(pr[j], head[j * C3 + 2 * C + e], acc);
    yi[e] = acc;
  }
}

// Backward stage 1: one block per query row (b, h, i); grid B*H*T. Writes dS row i into ds
// [B, H, T, T] (columns j <= i) and dq_i. Dynamic shared memory: dy_i [D].
__global__ void attention_backward_query_kernel(const float* dy, const float* qkv, const float* probs, float* ds,
                                                float* dqkv, int T, int C, int H, int D, float scale) {
  extern __shared__ float dyi[];
  __shared__ float scratch[kWarp];
  const std::int64_t row = blockIdx.x;
  const int i = static_cast<int>(row % T);
  const std::int64_t bh = row / T;
  const std::int64_t b = bh / H, h = bh % H;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const float* head = qkv + b * T * C3 + h * D;

  for (int e = tid; e < D; e += nthreads) dyi[e] = dy[(b * T + i) * C + h * D + e];
  __syncthreads();

  const float* pr = probs + row * T;
  float* dsr = ds + row * T;
  float part = 0.f;
  for (int j = tid; j <= i; j += nthreads) {
    const float* vj = head + j * C3 + 2 * C;
    float dp = 0.f;
    for (int e = 0; e < D; ++e) dp = fmaf(dyi[e], vj[e], dp);
    dsr[j] = dp;
    part = fmaf(pr[j], dp, part);
  }
  const float rowsum = block_reduce(part, SumOp{}, scratch);
  for (int j = tid; j <= i; j += nthreads) dsr[j] = pr[j] * (dsr[j] - rowsum) * scale;
  __syncthreads();  // the whole dS row is read below

  float* dqi = dqkv + (b * T + i) * C3 + h * D;
  for (int e = tid; e < D; e += nthreads) {
    float acc = 0.f;
    for (int j = 0; j <= i; ++j) acc = fmaf(dsr[j], head[j * C3 + C + e], acc);
    dqi[e] = acc;
  }
}

// Backward stage 2: one block per key row (b, h, j); grid B*H*T.
//   dk_j = sum_{i >= j} dS_ij q_i,  dv_j = sum_{i >= j} p_ij dy_i.
__global__ void attention_backward_key_kernel(const float* dy, const float* qkv, const float* probs, const float* ds,
                                              float* dqkv, int T, int C, int H, int D) {
  const std::int64_t row = blockIdx.x;
  const int j = static_cast<int>(row % T);
  const std::int64_t bh = row / T;
  const std::int64_t b = bh / H, h = bh % H;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const float* head = qkv + b * T * C3 + h * D;
  const float* dy_head = dy + b * T * C + h * D;
  const float* ds_col = ds + bh * T * T + j;        // ds_col[i * T] = dS_ij
  const float* p_col = probs + bh * T * T + j;      // p_col[i * T] = p_ij
  float* dkj = dqkv + (b * T + j) * C3 + C + h * D;
  for (int e = threadIdx.x; e < D; e += blockDim.x) {
    float dk = 0.f, dv = 0.f;
    for (int i = j; i < T; ++i) {
      dk = fmaf(ds_col[std::int64_t(i) * T], head[i * C3 + e], dk);
      dv = fmaf(p_col[std::int64_t(i) * T], dy_head[std::int64_t(i) * C + e], dv);
    }
    dkj[e] = dk;
    dkj[C + e] = dv;
  }
}

// ---------------------------------------------------------------- second order

// The gradient g = (gQ | gK | gV) of attention_backward's dqkv, taken back to qkv and dy; the formulas
// are those of the CPU kernel (kernels/cpu/attention.cpp). One block per head (b, h); grid B*H. The
// head's three T x T coefficient matrices live in the workspace w [B*H][3][T][T]:
//   w0: dP, then U = P (dP - r);  w1: H, then gdP;  w2: gV . dY, then gP, then gS.
// Every output element is owned by one thread, which sums its terms in index order.
__global__ void attention_double_backward_kernel(const float* dy, const float* qkv, const float* probs,
                                                 const float* g, float* gqkv, float* gdy, float* w, int T, int C,
                                                 int H, int D, float scale) {
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const std::int64_t C3 = 3 * std::int64_t(C);
  const std::int64_t TT = std::int64_t(T) * T;
  const float* head = qkv + std::int64_t(b) * T * C3 + std::int64_t(h) * D;   // q at 0, k at C, v at 2C
  const float* ghead = g + std::int64_t(b) * T * C3 + std::int64_t(h) * D;    // gq, gk, gv likewise
  const float* dy_head = dy + std::int64_t(b) * T * C + std::int64_t(h) * D;
  float* out_head = gqkv + std::int64_t(b) * T * C3 + std::int64_t(h) * D;
  float* gdy_head = gdy + std::int64_t(b) * T * C + std::int64_t(h) * D;
  const float* P = probs + std::int64_t(bh) * TT;
  float* w0 = w + std::int64_t(bh) * 3 * TT;
  float* w1 = w0 + TT;
  float* w2 = w1 + TT;

  // dP_ij = dy_i . v_j, H_ij = scale (gq_i . k_j + q_i . gk_j), gv_j . dy_i for j <= i
  for (std::int64_t idx = tid; idx < TT; idx += nthreads) {
    const int i = static_cast<int>(idx / T), j = static_cast<int>(idx % T);
    if (j > i) continue;
    const float* qi = head + i * C3;
    const float* kj = head + j * C3 + C;
    const float* vj = head + j * C3 + 2 * C;
    const float* gqi = ghead + i * C3;
    const float* gkj = ghead + j * C3 + C;
    const float* gvj = ghead + j * C3 + 2 * C;
    const float* dyi = dy_head + std::int64_t(i) * C;
    float dp = 0.f, hq = 0.f, gvdy = 0.f;
    for (int e = 0; e < D; ++e) {
      dp = fmaf(dyi[e], vj[e], dp);
      hq = fmaf(gqi[e], kj[e], fmaf(qi[e], gkj[e], hq));
      gvdy = fmaf(gvj[e], dyi[e], gvdy);
    }
    w0[idx] = dp;
    w1[idx] = hq * scale;
    w2[idx] = gvdy;
  }
  __syncthreads();

  // Row statistics, one warp per row; lane l owns columns j = l, l + 32, ... through both passes.
  const int lane = tid % kWarp, warp = tid / kWarp, warps = nthreads / kWarp;
  for (int i = warp; i < T; i += warps) {
    const float* pi = P + std::int64_t(i) * T;
    float* u = w0 + std::int64_t(i) * T;
    float* gd = w1 + std::int64_t(i) * T;
    float* gs = w2 + std::int64_t(i) * T;
    float r = 0.f, hp = 0.f;
    for (int j = lane; j <= i; j += kWarp) {
      r = fmaf(pi[j], u[j], r);
      hp = fmaf(pi[j], gd[j], hp);
    }
    r = warp_sum(r);
    hp = warp_sum(hp);
    float gpp = 0.f;
    for (int j = lane; j <= i; j += kWarp) {
      const float dp = u[j], hij = gd[j];
      const float gp = hij * (dp - r) - hp * dp + gs[j];
      u[j] = pi[j] * (dp - r);
      gd[j] = pi[j] * (hij - hp);
      gs[j] = gp;
      gpp = fmaf(pi[j], gp, gpp);
    }
    gpp = warp_sum(gpp);
    for (int j = lane; j <= i; j += kWarp) gs[j] = pi[j] * (gs[j] - gpp);
  }
  __syncthreads();

  // gq_t = scale sum_{j <= t} (U_tj gk_j + gS_tj k_j),  gdy_t = sum_{j <= t} (P_tj gv_j + gdP_tj v_j),
  // gk_t = scale sum_{i >= t} (U_it gq_i + gS_it q_i),   gv_t = sum_{i >= t} gdP_it dy_i.
  for (std::int64_t idx = tid; idx < std::int64_t(T) * D; idx += nthreads) {
    const int t = static_cast<int>(idx / D), e = static_cast<int>(idx % D);
    float gq = 0.f, gd = 0.f, gk = 0.f, gv = 0.f;
    for (int j = 0; j <= t; ++j) {
      const std::int64_t tj = std::int64_t(t) * T + j;
      const float* kj = head + j * C3 + C;
      const float* gkj = ghead + j * C3 + C;
      gq = fmaf(w0[tj], gkj[e], fmaf(w2[tj], kj[e], gq));
      gd = fmaf(P[tj], gkj[C + e], fmaf(w1[tj], kj[C + e], gd));
    }
    for (int i = t; i < T; ++i) {
      const std::int64_t it = std::int64_t(i) * T + t;
      gk = fmaf(w0[it], ghead[i * C3 + e], fmaf(w2[it], head[i * C3 + e], gk));
      gv = fmaf(w1[it], dy_head[std::int64_t(i) * C + e], gv);
    }
    out_head[t * C3 + e] = gq * scale;
    out_head[t * C3 + C + e] = gk * scale;
    out_head[t * C3 + 2 * C + e] = gv;
    gdy_head[std::int64_t(t) * C + e] = gd;
  }
}

float attention_scale(std::int64_t d) { return static_cast<float>(1.0 / sqrt(static_cast<double>(d))); }

bool sizes_fit_int(std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h) {
  constexpr std::int64_t kMax = 0x7fffffff;
  return b > 0 && t > 0 && c > 0 && h > 0 && c % h == 0 && t <= kMax && 3 * c <= kMax && b * h <= kMax &&
         b * h * t <= kMax;
}

}  // namespace

namespace {

// Allows `kernel` every byte of dynamic shared memory the device offers beside its static shared
// memory, and reports that amount.
template <class Kernel>
cudaError_t allow_all_smem(Kernel kernel, int max_optin_smem, int& limit) {
  cudaFuncAttributes attributes{};
  TG_RETURN_IF_ERROR(cudaFuncGetAttributes(&attributes, kernel));
  const int allowed = max_optin_smem - static_cast<int>(attributes.sharedSizeBytes);
  if (allowed <= 0) return cudaErrorInvalidValue;
  TG_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, allowed));
  limit = allowed;
  return cudaSuccess;
}

}  // namespace

cudaError_t configure_kernels(int max_optin_smem, KernelLimits& limits) {
  TG_RETURN_IF_ERROR(allow_all_smem(attention_forward_short_kernel, max_optin_smem, limits.attention_short_forward));
  TG_RETURN_IF_ERROR(allow_all_smem(attention_backward_short_kernel, max_optin_smem, limits.attention_short_backward));
  TG_RETURN_IF_ERROR(allow_all_smem(attention_forward_row_kernel, max_optin_smem, limits.attention_row_forward));
  TG_RETURN_IF_ERROR(allow_all_smem(attention_backward_query_kernel, max_optin_smem, limits.attention_row_backward));
  return cudaSuccess;
}

cudaError_t launch_attention_forward(const float* qkv, float* y, float* probs, std::int64_t b, std::int64_t t,
                                     std::int64_t c, std::int64_t h, const KernelLimits& limits,
                                     cudaStream_t stream) {
  if (b == 0 || t == 0 || c == 0) return cudaSuccess;
  if (!sizes_fit_int(b, t, c, h)) return cudaErrorInvalidValue;
  const std::int64_t d = c / h;
  const float scale = attention_scale(d);
  const int T = static_cast<int>(t), C = static_cast<int>(c), H = static_cast<int>(h), D = static_cast<int>(d);
  if (use_short_forward(t, d, limits)) {
    attention_forward_short_kernel<<<static_cast<unsigned>(b * h), short_threads(t, d), short_forward_smem(t, d),
                                     stream>>>(qkv, y, probs, T, C, H, D, scale);
  } else {
    const std::size_t smem = row_smem(d);
    if (smem > static_cast<std::size_t>(limits.attention_row_forward)) return cudaErrorInvalidConfiguration;
    attention_forward_row_kernel<<<static_cast<unsigned>(b * h * t), kRowThreads, smem, stream>>>(qkv, y, probs, T, C,
                                                                                                  H, D, scale);
  }
  return cudaGetLastError();
}

std::size_t attention_backward_workspace_bytes(std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h,
                                               const KernelLimits& limits) {
  if (b <= 0 || t <= 0 || c <= 0 || h <= 0) return 0;
  if (use_short_backward(t, c / h, limits)) return 0;
  return static_cast<std::size_t>(b * h * t * t) * sizeof(float);  // dS
}

cudaError_t launch_attention_backward(const float* dy, const float* qkv, const float* probs, float* dqkv,
                                      std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h,
                                      const KernelLimits& limits, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream) {
  if (b == 0 || t == 0 || c == 0) return cudaSuccess;
  if (!sizes_fit_int(b, t, c, h)) return cudaErrorInvalidValue;
  const std::int64_t d = c / h;
  const float scale = attention_scale(d);
  const int T = static_cast<int>(t), C = static_cast<int>(c), H = static_cast<int>(h), D = static_cast<int>(d);
  if (use_short_backward(t, d, limits)) {
    attention_backward_short_kernel<<<static_cast<unsigned>(b * h), short_threads(t, d), short_backward_smem(t, d),
                                      stream>>>(dy, qkv, probs, dqkv, T, C, H, D, scale);
    return cudaGetLastError();
  }
  if (workspace_bytes < attention_backward_workspace_bytes(b, t, c, h, limits)) return cudaErrorInvalidValue;
  const std::size_t smem = row_smem(d);
  if (smem > static_cast<std::size_t>(limits.attention_row_backward)) return cudaErrorInvalidConfiguration;
  float* ds = static_cast<float*>(workspace);
  const unsigned rows = static_cast<unsigned>(b * h * t);
  attention_backward_query_kernel<<<rows, kRowThreads, smem, stream>>>(dy, qkv, probs, ds, dqkv, T, C, H, D, scale);
  TG_RETURN_IF_LAUNCH_FAILED();
  const int key_threads = d >= 128 ? 128 : static_cast<int>((d + kWarp - 1) / kWarp * kWarp);
  attention_backward_key_kernel<<<rows, key_threads, 0, stream>>>(dy, qkv, probs, ds, dqkv, T, C, H, D);
  return cudaGetLastError();
}

std::size_t attention_double_backward_workspace_bytes(std::int64_t b, std::int64_t t, std::int64_t h) {
  if (b <= 0 || t <= 0 || h <= 0) return 0;
  return static_cast<std::size_t>(b * h * 3 * t * t) * sizeof(float);
}

cudaError_t launch_attention_double_backward(const float* dy, const float* qkv, const float* probs, const float* g,
                                             float* gqkv, float* gdy, std::int64_t b, std::int64_t t, std::int64_t c,
                                             std::int64_t h, void* workspace, std::size_t workspace_bytes,
                                             cudaStream_t stream) {
  if (b == 0 || t == 0 || c == 0) return cudaSuccess;
  if (!sizes_fit_int(b, t, c, h)) return cudaErrorInvalidValue;
  if (workspace_bytes < attention_double_backward_workspace_bytes(b, t, h)) return cudaErrorInvalidValue;
  const std::int64_t d = c / h;
  attention_double_backward_kernel<<<static_cast<unsigned>(b * h), kRowThreads, 0, stream>>>(
      dy, qkv, probs, g, gqkv, gdy, static_cast<float*>(workspace), static_cast<int>(t), static_cast<int>(c),
      static_cast<int>(h), static_cast<int>(d), attention_scale(d));
  return cudaGetLastError();
}

}  // namespace tg::cuda

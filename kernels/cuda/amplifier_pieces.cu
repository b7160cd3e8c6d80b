// The amplifier MLP's pieces on the GPU: the build, level by level, and the weight gradients from
// per-piece sums (amplifier_pieces.cuh explains the construction).
//
// Build, for L linear layers (2L launches, each sized by capacity):
//   init:              level 0 = one interval (-inf, inf].
//   split(l):          one block per level-l interval: layer l's za, zb (one thread per unit, the
//                      dot product over the layer's input in the CPU's order); for hidden layers the
//                      crossings -zb/za inside the interval, sorted by rank and made distinct.
//   scan(l):           one block: each interval's first child (exclusive sum of ncut + 1, CUB
//                      BlockScan) and the next level's count.
//   expand(l):         one block per level-(l + 1) interval: its parent (binary search over the first
//                      children), its ends, and the on/off state of layer l's units at a point inside.
// Weight gradients:
//   radix sort of (piece, entry) pairs (stable), piece_sums: one block per piece sums ds and ds g
//   over its run; then for l = L - 1 .. 0: weight_grads(l) (one warp per weight or bias, lanes over
//   the level's intervals), and for l >= 1 through_weights(l) (each interval's gradient at its layer
//   input; folded into gather for the last level) and gather(l) (each parent sums its children's, in
//   child order).
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/amplifier_pieces.cuh"

namespace tg::cuda {

namespace {

constexpr int kThreads = 128;       // split / expand blocks: one thread per unit (looping when wider)
constexpr int kScanThreads = 256;
constexpr int kSumThreads = 256;    // piece_sums blocks
constexpr int kGradThreads = 256;   // weight_grads: 8 warps, one weight each
constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// The capacities of every level, or false when the MLP is outside what the pieces path takes.
bool capacities(const AmpMlp& mlp, std::int64_t* cap) {
  if (mlp.layers < 2 || mlp.layers > kMaxPieceLayers) return false;
  if (mlp.in[0] != 1 || mlp.out[mlp.layers - 1] != 1) return false;  // a scalar in, a scalar out
  cap[0] = 1;
  for (int l = 0; l < mlp.layers; ++l) {
    if (mlp.in[l] < 1 || mlp.out[l] < 1 || mlp.in[l] > kMaxPieceWidth || mlp.out[l] > kMaxPieceWidth) return false;
    if (l + 1 < mlp.layers) {
      cap[l + 1] = cap[l] * (mlp.out[l] + 1);
      // The on/off states of level l + 1 take cap x width bytes: keep them (and the workspace) small.
      if (cap[l + 1] > kMaxAmpPieces || cap[l + 1] * mlp.out[l] > kMaxPieceStates) return false;
    }
  }
  return true;
}

int bits_for(std::int64_t value) {  // bits that hold 0 .. value
  int bits = 1;
  while ((std::int64_t(1) << bits) <= value) ++bits;
  return bits;
}

// Lays P's arrays out from `base` (nullptr: only measure) and returns the bytes used.
std::size_t carve(const AmpMlp& mlp, std::int64_t n, char* base, PieceLevels& P) {
  P = PieceLevels{};
  if (!capacities(mlp, P.cap) || n > 0x7fffffff) return 0;  // CUB's radix sort counts items in int
  const int L = mlp.layers;
  P.layers = L;
  for (int l = 0; l < L; ++l) {
    P.in[l] = mlp.in[l];
    P.out[l] = mlp.out[l];
    P.w[l] = mlp.w[l];
    P.b[l] = mlp.b[l];
  }
  std::size_t at = 0;
  auto take = [&](auto*& ptr, std::int64_t count) {
    using T = std::remove_reference_t<decltype(*ptr)>;
    ptr = base != nullptr ? reinterpret_cast<T*>(base + at) : nullptr;
    at += align_up(static_cast<std::size_t>(count > 0 ? count : 1) * sizeof(T));
  };
  take(P.count, L);
  std::int64_t widest_input = 1;
  for (int l = 0; l < L; ++l) {
    const std::int64_t cap = P.cap[l], in = P.in[l], out = P.out[l];
    take(P.lo[l], cap);
    take(P.hi[l], cap);
    take(P.za[l], cap * out);
    take(P.zb[l], cap * out);
    if (l >= 1) {
      take(P.parent[l], cap);
      take(P.on[l], cap * in);
      if (l + 1 < L) widest_input = std::max(widest_input, cap * in);  // the last level needs no ta, tc
    }
    if (l + 1 < L) {
      take(P.cuts[l], cap * out);
      take(P.ncut[l], cap);
      take(P.first_child[l], cap + 1);
    }
    if (n > 0) {
      take(P.ga[l], cap * out);
      take(P.gc[l], cap * out);
    }
  }
  if (n > 0) {
    take(P.ta, widest_input);
    take(P.tc, widest_input);
    take(P.keys_in, n);
    take(P.keys_out, n);
    take(P.index_in, n);
    take(P.index_out, n);
    take(P.ds, n);
    P.n = n;
    P.key_bits = bits_for(P.cap[L - 1]);
    std::size_t temp = 0;
    if (cub::DeviceRadixSort::SortPairs(nullptr, temp, P.keys_in, P.keys_out, P.index_in, P.index_out,
                                        static_cast<int>(n), 0, P.key_bits) != cudaSuccess) {
      P = PieceLevels{};  // no half-carved layout: callers see 0 bytes and an empty P, and refuse
      return 0;
    }
    P.sort_temp = base != nullptr ? base + at : nullptr;
    P.sort_temp_bytes = temp;
    at += align_up(temp);
  }
  return at;
}

// A point strictly inside (lo, hi] where no crossing lies (the CPU's `inside`).
__device__ double inside(double lo, double hi) {
  if (isinf(lo) && isinf(hi)) return 0.0;
  if (isinf(lo)) return hi - fmax(1.0, fabs(hi));
  if (isinf(hi)) return lo + fmax(1.0, fabs(lo));
  return lo + (hi - lo) / 2;
}

// Layer l's input on level-l interval q, a_in g + b_in ([in_l] each, shared memory), filled by the
// whole block: for layer 0 the input g itself; above, the parent's pre-activations with the off units zeroed.
__device__ void load_layer_input(const PieceLevels& P, int l, std::int64_t q, double* a_in, double* b_in) {
  const int in = P.in[l];
  if (l == 0) {
    if (threadIdx.x == 0) {
      a_in[0] = 1.0;
      b_in[0] = 0.0;
    }
    return;
  }
  const std::int64_t parent = P.parent[l][q];
  for (int k = threadIdx.x; k < in; k += blockDim.x) {
    const bool on = P.on[l][q * in + k] != 0;
    a_in[k] = on ? P.za[l - 1][parent * in + k] : 0.0;
    b_in[k] = on ? P.zb[l - 1][parent * in + k] : 0.0;
  }
}

__global__ void init_kernel(PieceLevels P) {
  P.count[0] = 1;
  P.lo[0][0] = -INFINITY;
  P.hi[0][0] = INFINITY;
}

// Grid: cap_l blocks of kThreads. Dynamic shared memory: (2 in_l + 2 out_l) doubles.
__global__ void __launch_bounds__(kThreads) split_kernel(PieceLevels P, int l) {
  extern __shared__ double smem[];
  const std::int64_t q = blockIdx.x;
  if (q >= P.count[l]) return;
  const int in = P.in[l], out = P.out[l];
  const bool hidden = l + 1 < P.layers;
  double* a_in = smem;
  double* b_in = a_in + in;
  double* t = b_in + in;    // [out]: unit j's crossing inside the interval, or NaN
  double* sorted = t + out; // [out]
  __shared__ int distinct;
  load_layer_input(P, l, q, a_in, b_in);
  __syncthreads();
  const double lo = P.lo[l][q], hi = P.hi[l][q];
  for (int j = threadIdx.x; j < out; j += blockDim.x) {
    const float* w = P.w[l] + static_cast<std::int64_t>(j) * in;
    double za = 0.0, zb = P.b[l][j];
    for (int k = 0; k < in; ++k) {
      za = __dadd_rn(za, __dmul_rn(static_cast<double>(w[k]), a_in[k]));
      zb = __dadd_rn(zb, __dmul_rn(static_cast<double>(w[k]), b_in[k]));
    }
    P.za[l][q * out + j] = za;
    P.zb[l][q * out + j] = zb;
    if (hidden) {
      const double c = -zb / za;  // za = 0: +-inf or NaN, which the test below drops
      t[j] = lo < c && c < hi ? c : NAN;
    }
  }
  if (!hidden) return;  // uniform across the block
  __syncthreads();
  // Rank of each crossing in the order (value, unit): distinct ranks, so every crossing has its slot.
  for (int j = threadIdx.x; j < out; j += blockDim.x) {
    const double tj = t[j];
    if (isnan(tj)) continue;
    int rank = 0;
    for (int i = 0; i < out; ++i) {
      const double ti = t[i];
      rank += (ti < tj || (ti == tj && i < j)) ? 1 : 0;
    }
    sorted[rank] = tj;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int valid = 0;
    for (int j = 0; j < out; ++j) valid += isnan(t[j]) ? 0 : 1;
    int kept = 0;  // drop repeated values (sorted, so repeats are adjacent)
    for (int r = 0; r < valid; ++r) {
      if (kept == 0 || sorted[r] != sorted[kept - 1]) sorted[kept++] = sorted[r];
    }
    distinct = kept;
    P.ncut[l][q] = kept;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < distinct; r += blockDim.x) P.cuts[l][q * out + r] = sorted[r];
}

// One block: first_child[l][q] = sum_{r < q} (ncut[l][r] + 1); count[l + 1] = the total.
__global__ void __launch_bounds__(kScanThreads) scan_kernel(PieceLevels P, int l) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int count = P.count[l];
  int carry = 0;
  for (int base = 0; base < count; base += kScanThreads) {
    const int q = base + static_cast<int>(threadIdx.x);
    const int children = q < count ? P.ncut[l][q] + 1 : 0;
    int before = 0, total = 0;
    Scan(temp).ExclusiveSum(children, before, total);
    if (q < count) P.first_child[l][q] = carry + before;
    carry += total;
    __syncthreads();  // temp is reused by the next chunk
  }
  if (threadIdx.x == 0) {
    P.first_child[l][count] = carry;
    P.count[l + 1] = carry;
  }
}

// Grid: cap_{l+1} blocks of kThreads. Interval r of level l + 1: parent q, ends, and layer l's units' states.
__global__ void __launch_bounds__(kThreads) expand_kernel(PieceLevels P, int l) {
  const std::int64_t r = blockIdx.x;
  if (r >= P.count[l + 1]) return;
  const int out = P.out[l];
  __shared__ double point;
  __shared__ int parent;
  if (threadIdx.x == 0) {
    const std::int32_t* first = P.first_child[l];
    int lo = 0, hi = P.count[l] - 1;  // the last q with first[q] <= r (first[] strictly increases)
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first[mid] <= r) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const int q = lo;
    const int s = static_cast<int>(r - first[q]);
    const int cuts = P.ncut[l][q];
    const double* c = P.cuts[l] + static_cast<std::int64_t>(q) * out;
    const double a = s == 0 ? P.lo[l][q] : c[s - 1];
    const double b = s == cuts ? P.hi[l][q] : c[s];
    P.parent[l + 1][r] = q;
    P.lo[l + 1][r] = a;
    P.hi[l + 1][r] = b;
    point = inside(a, b);
    parent = q;
  }
  __syncthreads();
  const std::int64_t q = parent;
  for (int j = threadIdx.x; j < out; j += blockDim.x) {
    const double z = __dadd_rn(__dmul_rn(P.za[l][q * out + j], point), P.zb[l][q * out + j]);
    P.on[l + 1][r * out + j] = z > 0.0 ? 1 : 0;
  }
}

__global__ void clear_keys_kernel(PieceLevels P) {
  const auto none = static_cast<std::uint32_t>(P.cap[P.layers - 1]);
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < P.n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    P.keys_in[i] = none;
    P.index_in[i] = static_cast<std::int32_t>(i);
  }
}

// The first position of sorted keys[0, n) not below `key`.
__device__ std::int64_t lower_bound(const std::uint32_t* keys, std::int64_t n, std::uint32_t key) {
  std::int64_t lo = 0, hi = n;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < key) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Grid: cap_{L-1} blocks of kSumThreads. Piece m: S0 = sum ds, S1 = sum ds g over its entries.
__global__ void __launch_bounds__(kSumThreads) piece_sums_kernel(PieceLevels P, const float* g) {
  __shared__ double scratch[kWarp];
  __shared__ std::int64_t range[2];
  const int last = P.layers - 1;
  const int m = blockIdx.x;
  if (m >= P.count[last]) return;
  if (threadIdx.x < 2) range[threadIdx.x] = lower_bound(P.keys_out, P.n, static_cast<std::uint32_t>(m) + threadIdx.x);
  __syncthreads();
  double s0 = 0.0, s1 = 0.0;
  for (std::int64_t i = range[0] + threadIdx.x; i < range[1]; i += blockDim.x) {
    const std::int32_t e = P.index_out[i];
    const double d = P.ds[e];
    s0 += d;
    s1 += d * static_cast<double>(g[e]);
  }
  s0 = block_reduce(s0, SumOp{}, scratch);
  s1 = block_reduce(s1, SumOp{}, scratch);
  if (threadIdx.x == 0) {
    P.gc[last][m] = s0;
    P.ga[last][m] = s1;
  }
}

// One warp per weight (out_l in_l of them) and per bias (out_l), lanes striding over level l's
// intervals q: dW[j, k] = sum_q ga[q, j] a_in(q)_k + gc[q, j] b_in(q)_k;  db[j] = sum_q gc[q, j].
__global__ void __launch_bounds__(kGradThreads) weight_grads_kernel(PieceLevels P, int l, AmpGrads grads) {
  const int in = P.in[l], out = P.out[l];
  const std::int64_t e = (blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x) / kWarp;  // uniform per warp
  const int lane = threadIdx.x % kWarp;
  const std::int64_t weights = static_cast<std::int64_t>(out) * in;
  if (e >= weights + out) return;
  const int count = P.count[l];
  double acc = 0.0;
  if (e < weights) {
    const int j = static_cast<int>(e / in), k = static_cast<int>(e % in);
    for (int q = lane; q < count; q += kWarp) {
      const double ga = P.ga[l][static_cast<std::int64_t>(q) * out + j];
      const double gc = P.gc[l][static_cast<std::int64_t>(q) * out + j];
      if (l == 0) {
        acc += ga;  // layer 0's input is g itself: a_in = 1, b_in = 0
      } else if (P.on[l][static_cast<std::int64_t>(q) * in + k] != 0) {
        const std::int64_t at = static_cast<std::int64_t>(P.parent[l][q]) * in + k;
        acc += ga * P.za[l - 1][at] + gc * P.zb[l - 1][at];
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) grads.w[l][e] = static_cast<float>(acc);
  } else {
    const int j = static_cast<int>(e - weights);
    for (int q = lane; q < count; q += kWarp) acc += P.gc[l][static_cast<std::int64_t>(q) * out + j];
    acc = warp_sum(acc);
    if (lane == 0) grads.b[l][j] = static_cast<float>(acc);
  }
}

// Level l >= 1, one thread per (interval q, input unit k): the gradient at layer l's input,
// ta[q, k] = [on] sum_j W[j, k] ga[q, j] (and tc from gc), the off units passing nothing.
__global__ void through_weights_kernel(PieceLevels P, int l) {
  const int in = P.in[l], out = P.out[l];
  const std::int64_t total = static_cast<std::int64_t>(P.count[l]) * in;
  const float* w = P.w[l];
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t q = idx / in;
    const int k = static_cast<int>(idx % in);
    double ta = 0.0, tc = 0.0;
    if (P.on[l][idx] != 0) {
      for (int j = 0; j < out; ++j) {
        const double wjk = w[static_cast<std::int64_t>(j) * in + k];
        ta = __dadd_rn(ta, __dmul_rn(wjk, P.ga[l][q * out + j]));
        tc = __dadd_rn(tc, __dmul_rn(wjk, P.gc[l][q * out + j]));
      }
    }
    P.ta[idx] = ta;
    P.tc[idx] = tc;
  }
}

// Level l >= 1, one thread per (parent p of level l - 1, unit k): ga[l-1][p, k] = the sum of its
// children's ta[., k] in child order (children are contiguous: first_child). For the last level
// (one output) a child's term is just [on] W[0, k] S1 (S0 for gc), computed here rather than stored:
// that level has the most intervals, and ta, tc for it would be the largest arrays of all.
__global__ void gather_kernel(PieceLevels P, int l) {
  const int in = P.in[l];  // = out_{l-1}
  const bool last = l + 1 == P.layers;
  const std::int64_t total = static_cast<std::int64_t>(P.count[l - 1]) * in;
  const std::int32_t* first = P.first_child[l - 1];
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t p = idx / in;
    const int k = static_cast<int>(idx % in);
    double ga = 0.0, gc = 0.0;
    for (std::int64_t q = first[p]; q < first[p + 1]; ++q) {
      if (last) {
        if (P.on[l][q * in + k] == 0) continue;
        const double wk = P.w[l][k];
        ga += __dmul_rn(wk, P.ga[l][q]);
        gc += __dmul_rn(wk, P.gc[l][q]);
      } else {
        ga += P.ta[q * in + k];
        gc += P.tc[q * in + k];
      }
    }
    P.ga[l - 1][idx] = ga;
    P.gc[l - 1][idx] = gc;
  }
}

}  // namespace

bool amplifier_pieces_supported(const AmpMlp& mlp) {
  std::int64_t cap[kMaxPieceLayers];
  return capacities(mlp, cap);
}

std::size_t amplifier_pieces_bytes(const AmpMlp& mlp, std::int64_t n) {
  PieceLevels P;
  return carve(mlp, n, nullptr, P);
}

PieceLevels amplifier_pieces_layout(const AmpMlp& mlp, std::int64_t n, void* workspace) {
  PieceLevels P;
  carve(mlp, n, static_cast<char*>(workspace), P);
  return P;
}

cudaError_t launch_amplifier_pieces_build(const PieceLevels& P, cudaStream_t stream) {
  if (P.layers < 2 || P.count == nullptr) return cudaErrorInvalidValue;
  init_kernel<<<1, 1, 0, stream>>>(P);
  TG_RETURN_IF_LAUNCH_FAILED();
  for (int l = 0; l < P.layers; ++l) {
    const std::size_t smem = (2 * static_cast<std::size_t>(P.in[l]) + 2 * static_cast<std::size_t>(P.out[l])) * sizeof(double);
    split_kernel<<<static_cast<unsigned>(P.cap[l]), kThreads, smem, stream>>>(P, l);
    TG_RETURN_IF_LAUNCH_FAILED();
    if (l + 1 == P.layers) break;
    scan_kernel<<<1, kScanThreads, 0, stream>>>(P, l);
    TG_RETURN_IF_LAUNCH_FAILED();
    expand_kernel<<<static_cast<unsigned>(P.cap[l + 1]), kThreads, 0, stream>>>(P, l);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

cudaError_t launch_amplifier_pieces_clear_keys(const PieceLevels& P, cudaStream_t stream) {
  if (P.n <= 0) return cudaSuccess;
  clear_keys_kernel<<<grid_for(P.n, 256), 256, 0, stream>>>(P);
  return cudaGetLastError();
}

cudaError_t launch_amplifier_pieces_weight_gradients(const PieceLevels& P, const float* g, const AmpGrads& grads,
                                                     cudaStream_t stream) {
  if (P.layers < 2 || P.ga[0] == nullptr || P.sort_temp == nullptr) return cudaErrorInvalidValue;
  const int last = P.layers - 1;
  std::size_t temp = P.sort_temp_bytes;
  TG_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(P.sort_temp, temp, P.keys_in, P.keys_out, P.index_in,
                                                     P.index_out, static_cast<int>(P.n), 0, P.key_bits, stream));
  piece_sums_kernel<<<static_cast<unsigned>(P.cap[last]), kSumThreads, 0, stream>>>(P, g);
  TG_RETURN_IF_LAUNCH_FAILED();
  for (int l = last; l >= 0; --l) {
    const std::int64_t warps = static_cast<std::int64_t>(P.out[l]) * P.in[l] + P.out[l];
    const std::int64_t blocks = (warps * kWarp + kGradThreads - 1) / kGradThreads;
    weight_grads_kernel<<<static_cast<unsigned>(blocks), kGradThreads, 0, stream>>>(P, l, grads);
    TG_RETURN_IF_LAUNCH_FAILED();
    if (l == 0) break;
    if (l < last) {
      through_weights_kernel<<<grid_for(P.cap[l] * P.in[l], 256), 256, 0, stream>>>(P, l);
      TG_RETURN_IF_LAUNCH_FAILED();
    }
    gather_kernel<<<grid_for(P.cap[l - 1] * P.in[l], 256), 256, 0, stream>>>(P, l);
    TG_RETURN_IF_LAUNCH_FAILED();
  }
  return cudaSuccess;
}

}  // namespace tg::cuda

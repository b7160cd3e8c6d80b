// The amplifier MLP as an exact piecewise-linear function, built and differentiated on the GPU.
//
// The same construction as the CPU's kernels/cpu/amplifier_pieces.h (read that first): level 0 is
// the whole real line; on every interval of level l the units of layers 0 .. l-1 keep their on/off
// state, so layer l's pre-activations are affine in g there, z_j = za_j g + zb_j; their zero crossings
// strictly inside the interval split it into the intervals of level l + 1. The last level's
// intervals are the pieces, and its "pre-activations" (one output) are the score: slope = za,
// intercept = zb.
//
// On the GPU the counts are known only on the device (no host round trip inside a step or a CUDA
// graph), so every level is laid out for its capacity, cap_0 = 1, cap_{l+1} = cap_l (out_l + 1), and
// kernels launch one block (or thread) per possible interval and skip those past the level's count.
// The arithmetic is the CPU's, operation for operation, in double with FMA contraction switched off
// (__dmul_rn / __dadd_rn here; CMakeLists.txt builds the CPU's amplifier files with -ffp-contract=off): the GPU builds the same
// pieces as the CPU from the same float weights.
//
// The backward needs per piece S0 = sum ds and S1 = sum ds g over the entries in it. Entries are
// grouped by piece with a stable radix sort (CUB) and each piece's run summed in a fixed order, so
// the result does not depend on scheduling. The weight gradients then go back level by level:
// per interval, ga = dL/dza and gc = dL/dzb of its layer (the last level: S1 and S0); each weight's
// gradient is a sum over the level's intervals (one warp per weight), and each parent interval
// gathers its children's contributions in child order (no atomics anywhere).
#pragma once

#include <cstdint>

#include "kernels/cuda/common.cuh"  // launch.cuh declares amplifier_pieces_supported

namespace tg::cuda {

// Every array of the pieces, carved from one workspace (by value into the kernels). Level l's
// arrays have cap[l] rows; in[l] = out[l - 1] for l >= 1.
struct PieceLevels {
  int layers = 0;  // L linear layers: levels 0 .. L - 1, level L - 1 holds the pieces
  int in[kMaxPieceLayers] = {}, out[kMaxPieceLayers] = {};
  std::int64_t cap[kMaxPieceLayers] = {};
  const float* w[kMaxPieceLayers] = {};  // [out_l, in_l]
  const float* b[kMaxPieceLayers] = {};  // [out_l]
  int* count = nullptr;                  // [L]: intervals of each level (device)
  std::int32_t* parent[kMaxPieceLayers] = {};       // [cap_l] (l >= 1): the level l - 1 interval holding it
  std::uint8_t* on[kMaxPieceLayers] = {};           // [cap_l, in_l] (l >= 1): layer l - 1's units that are on
  double* lo[kMaxPieceLayers] = {};                 // [cap_l]: the interval is (lo, hi]
  double* hi[kMaxPieceLayers] = {};
  double* za[kMaxPieceLayers] = {};                 // [cap_l, out_l]: layer l's pre-activations za g + zb
  double* zb[kMaxPieceLayers] = {};
  double* cuts[kMaxPieceLayers] = {};               // [cap_l, out_l] (l <= L - 2): sorted distinct crossings
  std::int32_t* ncut[kMaxPieceLayers] = {};         // [cap_l] (l <= L - 2)
  std::int32_t* first_child[kMaxPieceLayers] = {};  // [cap_l + 1] (l <= L - 2): children's first index
  // Backward only (null when carved without gradients):
  double* ga[kMaxPieceLayers] = {};  // [cap_l, out_l]: dL/dza, dL/dzb (level L - 1: S1, S0)
  double* gc[kMaxPieceLayers] = {};
  double* ta = nullptr;  // [max cap_l in_l over hidden levels l >= 1]: gradients at a level's layer input
  double* tc = nullptr;
  // Backward only: entries grouped by piece.
  std::uint32_t* keys_in = nullptr;  // [n]: the entry's piece; cap_{L-1} (after every piece) outside the segments
  std::uint32_t* keys_out = nullptr;
  std::int32_t* index_in = nullptr;  // [n]: 0 .. n - 1, then the entries in piece order
  std::int32_t* index_out = nullptr;
  double* ds = nullptr;              // [n]: dL/dscore of each entry
  void* sort_temp = nullptr;
  std::size_t sort_temp_bytes = 0;
  std::int64_t n = 0;
  int key_bits = 0;
};

// The piece holding g (the m with upper[m - 1] < g <= upper[m], upper = the pieces' right ends);
// a NaN lands in piece 0. The same branchless lower_bound as the CPU's AmplifierPieces::piece_of.
__device__ __forceinline__ int piece_of(const double* upper, int pieces, double g) {
  int len = pieces - 1;
  if (len <= 0) return 0;
  int base = 0;
  while (len > 1) {
    const int half = len / 2;
    base += upper[base + half - 1] < g ? half : 0;
    len -= half;
  }
  return base + (upper[base] < g ? 1 : 0);
}

// The score of g on piece m, as the CPU computes it: slope * g + intercept, in double, unfused.
__device__ __forceinline__ double piece_score(const PieceLevels& P, int m, double g) {
  const int last = P.layers - 1;
  return __dadd_rn(__dmul_rn(P.za[last][m], g), P.zb[last][m]);
}

// Workspace of the pieces; with `n` > 0 also the backward's gradient and sort buffers for n entries.
std::size_t amplifier_pieces_bytes(const AmpMlp& mlp, std::int64_t n);
// Carves `workspace` (amplifier_pieces_bytes(mlp, n) bytes) into P.
PieceLevels amplifier_pieces_layout(const AmpMlp& mlp, std::int64_t n, void* workspace);
// Builds the pieces into P (every level, on the stream).
cudaError_t launch_amplifier_pieces_build(const PieceLevels& P, cudaStream_t stream);
// Sets keys_in to "no piece" and index_in to 0 .. n - 1, before the entries write their pieces.
cudaError_t launch_amplifier_pieces_clear_keys(const PieceLevels& P, cudaStream_t stream);
// From keys_in, ds (written for every entry in a segment) and g: S0, S1 per piece, then every
// weight's gradient into `grads` (overwritten, float).
cudaError_t launch_amplifier_pieces_weight_gradients(const PieceLevels& P, const float* g, const AmpGrads& grads,
                                                     cudaStream_t stream);

}  // namespace tg::cuda

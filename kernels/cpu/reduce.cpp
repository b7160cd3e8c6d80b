// Reductions in a fixed order with double accumulators (deterministic, and accurate enough that
// float32 sums of a whole parameter vector stay close to the float64 reference).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

namespace {
// One term of ReduceOp::abs_entropy: -|x| ln|x|, 0 at x = 0 (NaN stays NaN).
inline double abs_entropy_term(double x) {
  const double a = std::fabs(x);
  return a == 0.0 ? 0.0 : -a * std::log(a);
}

// One term of a reduction.
template <ReduceOp Op, class T>
inline double term(T v) {
  if constexpr (Op == ReduceOp::sum) return double(v);
  if constexpr (Op == ReduceOp::abs_entropy) return abs_entropy_term(v);
  if constexpr (Op == ReduceOp::sum_squares) return double(v) * double(v);
}

// The reduction of n contiguous elements in kLanes interleaved partial sums (element i into lane
// i % kLanes), added lane by lane at the end: a fixed order that vectorises, where one accumulator
// would be a chain of dependent additions (4 cycles each).
template <ReduceOp Op, class T>
double reduce_lanes(const T* x, std::int64_t n) {
  constexpr std::int64_t kLanes = 8;
  const std::int64_t whole = n - n % kLanes;
  double lanes[kLanes] = {};
  for (std::int64_t i = 0; i < whole; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; ++l) lanes[l] += term<Op>(x[i + l]);
  }
  for (std::int64_t i = whole; i < n; ++i) lanes[i - whole] += term<Op>(x[i]);
  double total = 0.0;
  for (std::int64_t l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

template <class T>
double reduce_contiguous(ReduceOp op, const T* x, std::int64_t n) {
  switch (op) {
    case ReduceOp::sum: return reduce_lanes<ReduceOp::sum>(x, n);
    case ReduceOp::sum_squares: return reduce_lanes<ReduceOp::sum_squares>(x, n);
    case ReduceOp::abs_entropy: return reduce_lanes<ReduceOp::abs_entropy>(x, n);
  }
  return 0.0;
}

}  // namespace

template <class T>
void reduce_dim(ReduceOp op, const T* x, T* out, std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  // Each output element's order is fixed by the shape alone, whichever chunk of outputs it falls in.
  if (inner == 1) {  // each output reduces one contiguous run (a row sum), in lanes
    parallel_for(outer, grain_for(2 * reduce), [&](std::int64_t o0, std::int64_t o1) {
      for (std::int64_t o = o0; o < o1; ++o) out[o] = static_cast<T>(reduce_contiguous(op, x + o * reduce, reduce));
    });
    return;
  }
  // Otherwise each output sums its `reduce` terms in order; the chunks are (outer block, run of 64
  // columns) pairs.
  constexpr std::int64_t kColumns = 64;
  const std::int64_t column_chunks = (inner + kColumns - 1) / kColumns;
  parallel_for(outer * column_chunks, grain_for(reduce * kColumns), [&](std::int64_t c0, std::int64_t c1) {
    double acc[kColumns];
    for (std::int64_t chunk = c0; chunk < c1; ++chunk) {
      const std::int64_t o = chunk / column_chunks, i0 = (chunk % column_chunks) * kColumns;
      const std::int64_t width = std::min(kColumns, inner - i0);
      std::fill(acc, acc + width, 0.0);
      const T* block = x + o * reduce * inner + i0;
      for (std::int64_t r = 0; r < reduce; ++r) {
        const T* row = block + r * inner;
        if (op == ReduceOp::sum) {
          for (std::int64_t i = 0; i < width; ++i) acc[i] += row[i];
        } else if (op == ReduceOp::abs_entropy) {
          for (std::int64_t i = 0; i < width; ++i) acc[i] += abs_entropy_term(row[i]);
        } else {
          for (std::int64_t i = 0; i < width; ++i) acc[i] += double(row[i]) * double(row[i]);
        }
      }
      for (std::int64_t i = 0; i < width; ++i) out[o * inner + i0 + i] = static_cast<T>(acc[i]);
    }
  });
}

// The order is fixed by n alone: blocks of kBlock elements, each reduced by reduce_contiguous, and the
// block results added in block order. So the blocks can run on the pool, and the result is the same
// for any thread count.
template <class T>
void reduce_all(ReduceOp op, const T* x, T* out, std::int64_t n) {
  constexpr std::int64_t kBlock = 4096;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> block_sums(static_cast<std::size_t>(blocks));
  const std::int64_t cost = op == ReduceOp::abs_entropy ? 20 * kBlock : 2 * kBlock;
  parallel_for(blocks, grain_for(cost), [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      block_sums[static_cast<std::size_t>(b)] = reduce_contiguous(op, x + b * kBlock, std::min(kBlock, n - b * kBlock));
    }
  });
  double acc = 0.0;
  for (const double b : block_sums) acc += b;
  out[0] = static_cast<T>(acc);
}

template <class T>
void argmax_lastdim(const T* x, std::int32_t* out, std::int64_t rows, std::int64_t n) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * n;
    std::int64_t best = 0;
    for (std::int64_t j = 1; j < n; ++j) {
      if (row[j] > row[best]) best = j;
    }
    out[r] = static_cast<std::int32_t>(best);
  }
}

template <class T>
void count_equal(const std::int32_t* a, const std::int32_t* b, T* out, std::int64_t n) {
  std::int64_t equal = 0;
  for (std::int64_t i = 0; i < n; ++i) equal += a[i] == b[i];
  out[0] = static_cast<T>(equal);
}

#define TG_INSTANTIATE(T)                                                                      \
  template void reduce_dim<T>(ReduceOp, const T*, T*, std::int64_t, std::int64_t, std::int64_t); \
  template void reduce_all<T>(ReduceOp, const T*, T*, std::int64_t);                           \
  template void argmax_lastdim<T>(const T*, std::int32_t*, std::int64_t, std::int64_t);           \
  template void count_equal<T>(const std::int32_t*, const std::int32_t*, T*, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu

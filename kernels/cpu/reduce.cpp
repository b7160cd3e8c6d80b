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
}  // namespace

template <class T>
void reduce_dim(ReduceOp op, const T* x, T* out, std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  // Each output element sums its `reduce` terms in order, whichever chunk of outputs it falls in; the
  // chunks are (outer block, run of 64 columns) pairs.
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

// The order is fixed by n alone: blocks of kBlock elements, each summed in kLanes interleaved partial
// sums (element i into lane i % kLanes) that are then added lane by lane; the block sums are added in
// block order. Independent lanes and blocks let the sum vectorise and run on the pool instead of one
// chain of dependent additions (4 cycles each), and the result is the same for any thread count.
template <class T>
void reduce_all(ReduceOp op, const T* x, T* out, std::int64_t n) {
  constexpr std::int64_t kBlock = 4096, kLanes = 8;
  auto term = [op](T v) {
    if (op == ReduceOp::sum) return double(v);
    if (op == ReduceOp::abs_entropy) return abs_entropy_term(v);
    return double(v) * double(v);
  };
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> block_sums(static_cast<std::size_t>(blocks));
  const std::int64_t cost = op == ReduceOp::abs_entropy ? 20 * kBlock : 2 * kBlock;
  parallel_for(blocks, grain_for(cost), [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      const T* xb = x + b * kBlock;
      const std::int64_t len = std::min(kBlock, n - b * kBlock), whole = len - len % kLanes;
      double lanes[kLanes] = {};
      for (std::int64_t i = 0; i < whole; i += kLanes) {
        for (std::int64_t l = 0; l < kLanes; ++l) lanes[l] += term(xb[i + l]);
      }
      for (std::int64_t i = whole; i < len; ++i) lanes[i - whole] += term(xb[i]);
      double total = 0.0;
      for (std::int64_t l = 0; l < kLanes; ++l) total += lanes[l];
      block_sums[static_cast<std::size_t>(b)] = total;
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

// Elementwise CPU kernels: fill, strided copy, dtype conversion, unary math, activation derivatives
// and broadcasting binary arithmetic.
#include <cmath>
#include <cstring>
#include <numbers>
#include <optional>

#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

namespace {

// Calls f(offset) for every element of a strided view, in row-major order.
template <class F>
void for_each_offset(const StridedView& v, F&& f) {
  if (v.rank == 0) {
    f(std::int64_t{0});
    return;
  }
  std::int64_t index[kMaxDims] = {};
  const int last = v.rank - 1;
  const std::int64_t n_last = v.shape[last], s_last = v.strides[last];
  std::int64_t base = 0;
  while (true) {
    for (std::int64_t i = 0; i < n_last; ++i) f(base + i * s_last);
    int d = last - 1;
    for (; d >= 0; --d) {
      base += v.strides[d];
      if (++index[d] < v.shape[d]) break;
      base -= v.strides[d] * v.shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}


// Advances the offset of a strided view by one element in row-major order.
struct Cursor {
  const StridedView& v;
  std::int64_t index[kMaxDims] = {};
  std::int64_t offset = 0;
  explicit Cursor(const StridedView& view) : v(view) {}
  void next() {
    for (int d = v.rank - 1; d >= 0; --d) {
      offset += v.strides[d];
      if (++index[d] < v.shape[d]) return;
      offset -= v.strides[d] * v.shape[d];
      index[d] = 0;
    }
  }
};

// The normal density and CDF: vectorisable float versions, libm for double (kernels/cpu/fast_math.h).
template <class T>
T phi(T x) {
  return normal_pdf(x);
}
template <class T>
T Phi(T x) {
  return normal_cdf(x);
}

}  // namespace

template <class T>
void fill(T* out, const StridedView& view, T value) {
  for_each_offset(view, [&](std::int64_t o) { out[o] = value; });
}

template <class T>
void copy(const T* src, const StridedView& src_view, T* dst, const StridedView& dst_view) {
  for (int d = 0; d < dst_view.rank; ++d) {
    if (dst_view.shape[d] == 0) return;  // nothing to copy (the walks below assume every extent >= 1)
  }
  const bool src_flat = src_view.rank == 0 || (src_view.rank == 1 && src_view.strides[0] == 1);
  const bool dst_flat = dst_view.rank == 0 || (dst_view.rank == 1 && dst_view.strides[0] == 1);
  if (src_flat && dst_flat) {  // both contiguous: one memcpy
    std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(src_view.rank == 0 ? 1 : src_view.shape[0]));
    return;
  }
  // One side contiguous, the other made of contiguous rows (a broadcast bias [rows, C] with strides
  // [0, 1], the answer position sliced out of [B, S, C]): a memcpy per row.
  const auto row_copy = [&](const StridedView& rows_view, auto&& copy_row) {
    StridedView outer = rows_view;  // every dimension but the last
    outer.rank -= 1;
    const std::int64_t row = rows_view.shape[rows_view.rank - 1];
    std::int64_t k = 0;
    for_each_offset(outer, [&](std::int64_t o) { copy_row(o, k++ * row, row); });
  };
  const std::size_t bytes = sizeof(T);
  if (dst_flat && src_view.rank >= 2 && src_view.strides[src_view.rank - 1] == 1) {
    row_copy(src_view, [&](std::int64_t s, std::int64_t d, std::int64_t n) {
      std::memcpy(dst + d, src + s, bytes * static_cast<std::size_t>(n));
    });
    return;
  }
  if (src_flat && dst_view.rank >= 2 && dst_view.strides[dst_view.rank - 1] == 1) {
    row_copy(dst_view, [&](std::int64_t d, std::int64_t s, std::int64_t n) {
      std::memcpy(dst + d, src + s, bytes * static_cast<std::size_t>(n));
    });
    return;
  }
  // Both views list the same elements in the same row-major order (merging dimensions keeps the
  // order), so walk them side by side.
  Cursor cs(src_view);
  for_each_offset(dst_view, [&](std::int64_t o) {
    dst[o] = src[cs.offset];
    cs.next();
  });
}

template <class From, class To>
void convert(const From* src, To* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

template <class T>
void unary(UnaryOp op, const T* x, T* out, std::int64_t n, T alpha, T beta) {
  switch (op) {
    case UnaryOp::neg: for (std::int64_t i = 0; i < n; ++i) out[i] = -x[i]; break;
    case UnaryOp::exp: for (std::int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i]); break;  // exact: ops use it
    case UnaryOp::log: for (std::int64_t i = 0; i < n; ++i) out[i] = std::log(x[i]); break;
    case UnaryOp::abs: for (std::int64_t i = 0; i < n; ++i) out[i] = std::abs(x[i]); break;
    case UnaryOp::sqrt: for (std::int64_t i = 0; i < n; ++i) out[i] = std::sqrt(x[i]); break;
    case UnaryOp::square: for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * x[i]; break;
    case UnaryOp::sign:
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>((x[i] > T(0)) - (x[i] < T(0)));
      break;
    case UnaryOp::relu: for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] > T(0) ? x[i] : T(0); break;
    case UnaryOp::gelu: for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * Phi(x[i]); break;
    case UnaryOp::gelu_grad2:
      for (std::int64_t i = 0; i < n; ++i) out[i] = phi(x[i]) * (T(2) - x[i] * x[i]);
      break;
    case UnaryOp::affine: for (std::int64_t i = 0; i < n; ++i) out[i] = alpha * x[i] + beta; break;
  }
}

template <class T>
void activation_backward(UnaryOp act, const T* x, const T* dy, T* dx, std::int64_t n) {
  if (act == UnaryOp::relu) {
    for (std::int64_t i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : T(0);
  } else {  // gelu
    for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (Phi(x[i]) + x[i] * phi(x[i]));
  }
}

template <class T>
void bias_gelu_forward(const T* x, const T* bias, T* y, std::int64_t rows, std::int64_t c) {
  parallel_for(rows, grain_for(8 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t i = 0; i < c; ++i) {
        const T h = x[r * c + i] + bias[i];
        y[r * c + i] = h * Phi(h);
      }
    }
  });
}

template <class T>
void bias_gelu_backward(const T* x, const T* bias, const T* dy, T* dx, std::int64_t rows, std::int64_t c) {
  parallel_for(rows, grain_for(12 * c), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t i = 0; i < c; ++i) {
        const T h = x[r * c + i] + bias[i];
        dx[r * c + i] = dy[r * c + i] * (Phi(h) + h * phi(h));
      }
    }
  });
}

namespace {
template <class T>
inline T apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return a;
}

bool is_flat(const StridedView& v) { return v.rank == 0 || (v.rank == 1 && v.strides[0] == 1); }
bool is_scalar(const StridedView& v) { return v.rank == 0 || (v.rank == 1 && v.strides[0] == 0); }
// [rows, n] repeating one contiguous row (a bias): merged strides [0, 1].
bool is_row_broadcast(const StridedView& v) { return v.rank == 2 && v.strides[0] == 0 && v.strides[1] == 1; }

// An operand over an output seen as [rows, len]: element (r, j) at p[r * row_step + j * col_step], with
// col_step 0 or 1. Covers a contiguous operand (len, 1), one row repeated (a bias: 0, 1), one value
// per row (a per-row statistic broadcast along the row: 1, 0) and one value (0, 0).
struct RowAccess {
  std::int64_t row_step, col_step;
};

// The access of `v` over [rows, len], if it is one of the four above.
std::optional<RowAccess> row_access(const StridedView& v, std::int64_t rows, std::int64_t len) {
  if (is_scalar(v)) return RowAccess{0, 0};
  if (is_flat(v)) return RowAccess{len, 1};
  if (v.rank == 2 && v.shape[0] == rows && v.shape[1] == len) {
    if (is_row_broadcast(v)) return RowAccess{0, 1};
    if (v.strides[0] == 1 && v.strides[1] == 0) return RowAccess{1, 0};
  }
  return std::nullopt;
}

// out[r, j] = a(r, j) op b(r, j) by rows; ACol/BCol are the operands' col_steps, fixed at compile time
// so the inner loop vectorises.
template <class T, BinaryOp Op, int ACol, int BCol>
void binary_rows(const T* a, std::int64_t a_row, const T* b, std::int64_t b_row, T* out, std::int64_t rows,
                 std::int64_t len) {
  parallel_for(rows, grain_for(2 * len), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* ar = a + r * a_row;
      const T* br = b + r * b_row;
      T* o = out + r * len;
      for (std::int64_t j = 0; j < len; ++j) o[j] = apply(Op, ar[j * ACol], br[j * BCol]);
    }
  });
}

// Broadcasts over [rows, len] with one operand of rank 2 (a bias repeated per row, LayerNorm's and
// softmax's per-row statistics in a recorded backward), by rows; false when the layouts are others.
template <class T, BinaryOp Op>
bool binary_by_rows(const T* a, const StridedView& av, const T* b, const StridedView& bv, T* out, std::int64_t n) {
  if (av.rank != 2 && bv.rank != 2) return false;
  const StridedView& two = av.rank == 2 ? av : bv;
  const std::int64_t rows = two.shape[0], len = two.shape[1];
  const auto ra = row_access(av, rows, len), rb = row_access(bv, rows, len);
  if (!ra || !rb || rows * len != n) return false;
  switch (ra->col_step * 2 + rb->col_step) {
    case 3: binary_rows<T, Op, 1, 1>(a, ra->row_step, b, rb->row_step, out, rows, len); break;
    case 2: binary_rows<T, Op, 1, 0>(a, ra->row_step, b, rb->row_step, out, rows, len); break;
    case 1: binary_rows<T, Op, 0, 1>(a, ra->row_step, b, rb->row_step, out, rows, len); break;
    default: binary_rows<T, Op, 0, 0>(a, ra->row_step, b, rb->row_step, out, rows, len); break;
  }
  return true;
}

// Any layouts: one cursor per input, output contiguous.
template <class T, BinaryOp Op>
void binary_general(const T* a, const StridedView& av, const T* b, const StridedView& bv, T* out, std::int64_t n) {
  Cursor ca(av), cb(bv);
  for (std::int64_t i = 0; i < n; ++i) {
    out[i] = apply(Op, a[ca.offset], b[cb.offset]);
    ca.next();
    cb.next();
  }
}

template <class T, BinaryOp Op>
void binary_loop(const T* a, const StridedView& av, const T* b, const StridedView& bv, T* out, std::int64_t n) {
  if (is_flat(av) && is_flat(bv) && av.rank == bv.rank) {
    parallel_for(n, grain_for(2), [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) out[i] = apply(Op, a[i], b[i]);
    });
  } else if (is_flat(av) && av.rank == 1 && is_scalar(bv)) {
    const T s = b[0];
    parallel_for(n, grain_for(2), [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) out[i] = apply(Op, a[i], s);
    });
  } else if (is_scalar(av) && is_flat(bv) && bv.rank == 1) {
    const T s = a[0];
    parallel_for(n, grain_for(2), [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) out[i] = apply(Op, s, b[i]);
    });
  } else if (!binary_by_rows<T, Op>(a, av, b, bv, out, n)) {
    binary_general<T, Op>(a, av, b, bv, out, n);
  }
}
}  // namespace

template <class T>
void binary(BinaryOp op, const T* a, const StridedView& av, const T* b, const StridedView& bv, T* out, std::int64_t n) {
  switch (op) {
    case BinaryOp::add: binary_loop<T, BinaryOp::add>(a, av, b, bv, out, n); break;
    case BinaryOp::sub: binary_loop<T, BinaryOp::sub>(a, av, b, bv, out, n); break;
    case BinaryOp::mul: binary_loop<T, BinaryOp::mul>(a, av, b, bv, out, n); break;
    case BinaryOp::div: binary_loop<T, BinaryOp::div>(a, av, b, bv, out, n); break;
  }
}

#define TG_INSTANTIATE(T)                                                                               \
  template void fill<T>(T*, const StridedView&, T);                                                     \
  template void copy<T>(const T*, const StridedView&, T*, const StridedView&);                          \
  template void unary<T>(UnaryOp, const T*, T*, std::int64_t, T, T);                                    \
  template void activation_backward<T>(UnaryOp, const T*, const T*, T*, std::int64_t);                  \
  template void bias_gelu_forward<T>(const T*, const T*, T*, std::int64_t, std::int64_t);               \
  template void bias_gelu_backward<T>(const T*, const T*, const T*, T*, std::int64_t, std::int64_t);    \
  template void binary<T>(BinaryOp, const T*, const StridedView&, const T*, const StridedView&, T*, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE
template void fill<std::int32_t>(std::int32_t*, const StridedView&, std::int32_t);
template void copy<std::int32_t>(const std::int32_t*, const StridedView&, std::int32_t*, const StridedView&);
template void convert<float, double>(const float*, double*, std::int64_t);
template void convert<double, float>(const double*, float*, std::int64_t);

}  // namespace tg::cpu

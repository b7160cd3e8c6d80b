// Elementwise ops: broadcasting binary arithmetic and unary math. Backward rules are written in the
// same ops, so each of these is differentiable to any order.
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

namespace detail {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    TG_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast together", op,
             shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor broadcast_view(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const std::size_t rank = shape.size();
  const std::size_t lead = rank - x.shape().size();
  Shape strides(rank, 0);
  for (std::size_t i = lead; i < rank; ++i) {
    const std::int64_t d = x.shape()[i - lead];
    strides[i] = d == 1 ? 0 : x.strides()[i - lead];
  }
  return x.as_strided(shape, strides, x.offset());
}

}  // namespace detail

using namespace detail;

namespace {

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  check_floating(name, a, "a");
  check_floating(name, b, "b");
  check_same(name, {{&a, "a"}, {&b, "b"}});
  const Shape shape = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  if (out.numel() > 0) backend_of(a).binary(op, broadcast_view(a, shape), broadcast_view(b, shape), out);

  TensorList outputs{out};
  tape().record(name, {a, b}, outputs, [op, a, b, out](const TensorList& g, const std::vector<bool>& needs) {
    const Tensor& dy = g[0];
    Tensor da, db;
    switch (op) {
      case BinaryOp::add:
        if (needs[0]) da = sum_to(dy, a.shape());
        if (needs[1]) db = sum_to(dy, b.shape());
        break;
      case BinaryOp::sub:
        if (needs[0]) da = sum_to(dy, a.shape());
        if (needs[1]) db = sum_to(neg(dy), b.shape());
        break;
      case BinaryOp::mul:
        if (needs[0]) da = sum_to(mul(dy, b), a.shape());
        if (needs[1]) db = sum_to(mul(dy, a), b.shape());
        break;
      case BinaryOp::div:  // out = a / b: da = dy / b, db = -dy * a / b^2 = -dy * out / b
        if (needs[0]) da = sum_to(div(dy, b), a.shape());
        if (needs[1]) db = sum_to(neg(div(mul(dy, out), b)), b.shape());
        break;
    }
    return TensorList{da, db};
  });
  return outputs[0];
}

Tensor unary(UnaryOp op, const Tensor& x, double alpha = 1.0, double beta = 0.0) {
  const char* name = unary_op_name(op);
  check_floating(name, x, "x");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() > 0) backend_of(x).unary(op, x.contiguous(), out, alpha, beta);

  TensorList outputs{out};
  tape().record(name, {x}, outputs, [op, x, out, alpha](const TensorList& g, const std::vector<bool>&) {
    const Tensor& dy = g[0];
    switch (op) {
      case UnaryOp::neg: return TensorList{neg(dy)};
      case UnaryOp::exp: return TensorList{mul(dy, out)};
      case UnaryOp::log: return TensorList{div(dy, x)};
      case UnaryOp::abs: return TensorList{mul(dy, sign(x))};
      case UnaryOp::sqrt: return TensorList{div(scale(dy, 0.5), out)};
      case UnaryOp::square: return TensorList{mul(dy, scale(x, 2.0))};
      case UnaryOp::sign: return TensorList{Tensor()};  // zero almost everywhere
      case UnaryOp::affine: return TensorList{scale(dy, alpha)};
      case UnaryOp::relu: return TensorList{relu_backward(x, dy)};
      case UnaryOp::gelu: return TensorList{gelu_backward(x, dy)};
      case UnaryOp::gelu_grad2: break;  // only used inside gelu_backward's rule: third order is not provided
    }
    return no_backward_rule("gelu_grad2")(g, {});
  });
  return outputs[0];
}

}  // namespace

namespace detail {
Tensor unary_op(UnaryOp op, const Tensor& x, double alpha, double beta) { return unary(op, x, alpha, beta); }
}  // namespace detail

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }

Tensor neg(const Tensor& x) { return unary(UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::log, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::abs, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::square, x); }
Tensor sign(const Tensor& x) { return unary(UnaryOp::sign, x); }
Tensor scale(const Tensor& x, double alpha) { return unary(UnaryOp::affine, x, alpha, 0.0); }
Tensor add_scalar(const Tensor& x, double beta) { return unary(UnaryOp::affine, x, 1.0, beta); }
Tensor affine(const Tensor& x, double alpha, double beta) { return unary(UnaryOp::affine, x, alpha, beta); }

void add_(const Tensor& a, const Tensor& b) {
  check_floating("add_", a, "a");
  check_floating("add_", b, "b");
  check_same("add_", {{&a, "a"}, {&b, "b"}});
  TG_CHECK(a.shape() == b.shape(), "add_: shapes {} and {} differ", shape_str(a.shape()), shape_str(b.shape()));
  TG_CHECK(a.is_contiguous(), "add_: destination {} must be contiguous", a.str());
  if (a.numel() == 0) return;
  backend_of(a).binary(BinaryOp::add, a, b, a);
  a.storage()->bump_version();
}

}  // namespace tg

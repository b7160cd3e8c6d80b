// Reductions (CUB on the GPU), their broadcasting inverse `expand`, argmax and count_equal.
// Every sum runs in a fixed order, so results are bit-identical run to run.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

Tensor sum(const Tensor& x) {
  check_floating("sum", x, "x");
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  if (x.numel() == 0) {
    out.fill_(0.0);
  } else {
    backend_of(x).reduce_all(ReduceOp::sum, x.contiguous(), out);
  }
  TensorList outputs{out};
  tape().record("sum", {x}, outputs, [shape = x.shape()](const TensorList& g, const std::vector<bool>&) {
    return TensorList{expand(g[0], shape)};
  });
  return outputs[0];
}

Tensor sum(const Tensor& x, std::int64_t dim, bool keepdim) {
  check_floating("sum", x, "x");
  const std::int64_t d = normalize_dim("sum", dim, x.dim());
  std::int64_t outer = 1, inner = 1;
  for (std::int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (std::int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  const std::int64_t reduce = x.size(d);
  Shape kept = x.shape();
  kept[static_cast<std::size_t>(d)] = 1;
  Shape out_shape = kept;
  if (!keepdim) out_shape.erase(out_shape.begin() + d);

  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (out.numel() > 0) {
    if (reduce == 0) {
      out.fill_(0.0);
    } else {
      backend_of(x).reduce_dim(ReduceOp::sum, x.contiguous(), out, outer, reduce, inner);
    }
  }
  TensorList outputs{out};
  tape().record("sum_dim", {x}, outputs, [kept, shape = x.shape()](const TensorList& g, const std::vector<bool>&) {
    return TensorList{expand(reshape(g[0], kept), shape)};
  });
  return outputs[0];
}

Tensor mean(const Tensor& x) {
  check_floating("mean", x, "x");
  TG_CHECK(x.numel() > 0, "mean: tensor {} is empty", x.str());
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor mean(const Tensor& x, std::int64_t dim, bool keepdim) {
  check_floating("mean", x, "x");
  const std::int64_t n = x.size(normalize_dim("mean", dim, x.dim()));
  TG_CHECK(n > 0, "mean: dimension {} of {} is empty", dim, x.str());
  return scale(sum(x, dim, keepdim), 1.0 / static_cast<double>(n));
}

Tensor l2_norm(const Tensor& x) {
  check_floating("l2_norm", x, "x");
  Tensor squares = Tensor::empty({}, x.dtype(), x.device());
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  if (x.numel() == 0) {
    out.fill_(0.0);
  } else {
    Backend& be = backend_of(x);
    be.reduce_all(ReduceOp::sum_squares, x.contiguous(), squares);
    be.unary(UnaryOp::sqrt, squares, out, 1.0, 0.0);
  }
  TensorList outputs{out};
  // d||x|| = x / ||x||. Like the mathematics, undefined (NaN) at x = 0.
  tape().record("l2_norm", {x}, outputs, [x, out](const TensorList& g, const std::vector<bool>&) {
    return TensorList{mul(x, div(g[0], out))};
  });
  return outputs[0];
}

Tensor expand(const Tensor& x, const Shape& shape) {
  check_defined("expand", x, "x");
  const Shape full = broadcast_shapes("expand", x.shape(), shape);
  TG_CHECK(full == shape, "expand: {} cannot be broadcast to {}", x.str(), shape_str(shape));
  if (x.shape() == shape) return x;
  TensorList outputs{broadcast_view(x, shape)};
  tape().record("expand", {x}, outputs, [xshape = x.shape()](const TensorList& g, const std::vector<bool>&) {
    return TensorList{sum_to(g[0], xshape)};
  });
  return outputs[0];
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  check_floating("sum_to", x, "x");
  if (x.shape() == shape) return x;
  TG_CHECK(broadcast_shapes("sum_to", shape, x.shape()) == x.shape(),
           "sum_to: {} is not a broadcast of shape {}", x.str(), shape_str(shape));
  Tensor y = x;
  // Leading dimensions that `shape` lacks: fold them into one and sum it away.
  const std::int64_t lead = x.dim() - static_cast<std::int64_t>(shape.size());
  if (lead > 0) {
    Shape folded{-1};
    folded.insert(folded.end(), x.shape().begin() + lead, x.shape().end());
    y = sum(reshape(y, folded), 0);
  }
  // Dimensions that are 1 in `shape` but not in x.
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1 && y.size(static_cast<std::int64_t>(i)) != 1) y = sum(y, static_cast<std::int64_t>(i), true);
  }
  return y;
}

Tensor argmax(const Tensor& x) {
  check_floating("argmax", x, "x");
  TG_CHECK(x.dim() >= 1 && x.size(-1) > 0, "argmax: {} has no last dimension to search", x.str());
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  const std::int64_t rows = shape_numel(out_shape);
  Tensor out = Tensor::empty(out_shape, DType::i32, x.device());
  if (rows > 0) {
    Tensor xc = x.contiguous();
    backend_of(x).argmax_lastdim(xc.as_strided({rows, x.size(-1)}, {x.size(-1), 1}, xc.offset()),
                                 out.as_strided({rows}, {1}, 0));
  }
  return out;
}

Tensor count_equal(const Tensor& a, const Tensor& b, DType dtype) {
  check_ids("count_equal", a, "a");
  check_ids("count_equal", b, "b");
  check_same("count_equal", {{&a, "a"}, {&b, "b"}});
  TG_CHECK(a.shape() == b.shape(), "count_equal: a {} and b {} differ in shape", a.str(), b.str());
  TG_CHECK(is_floating(dtype), "count_equal: the count's dtype must be floating, got {}", dtype_name(dtype));
  TG_CHECK(a.numel() < (std::int64_t{1} << 24), "count_equal: {} positions exceed float's exact integers", a.numel());
  Tensor out = Tensor::empty({}, dtype, a.device());
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  backend_of(a).count_equal(ac.as_strided({a.numel()}, {1}, ac.offset()), bc.as_strided({b.numel()}, {1}, bc.offset()),
                            out);
  return out;
}

}  // namespace tg

// Views and copies: reshape, transpose, slice (no copy), concat, contiguous. Each is linear, so its
// backward is again one of these ops and second order comes for free.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// Pads dy (the gradient of a slice) back to the sliced tensor's shape with zeros.
Tensor slice_backward(const Tensor& dy, const Shape& shape, std::int64_t dim, std::int64_t start) {
  Tensor dx = Tensor::zeros(shape, dy.dtype(), dy.device());
  const std::int64_t length = dy.size(dim);
  if (dy.numel() > 0) {
    Tensor window = dx.as_strided(dy.shape(), dx.strides(), start * dx.strides()[static_cast<std::size_t>(dim)]);
    backend_of(dy).copy(dy, window);
  }
  TensorList outputs{dx};
  tape().record("slice_backward", {dy}, outputs, [dim, start, length](const TensorList& g, const std::vector<bool>&) {
    return TensorList{slice(g[0], dim, start, length)};
  });
  return outputs[0];
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  Shape target = shape;
  std::int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] == -1) {
      TG_CHECK(infer < 0, "reshape: more than one -1 in {}", shape_str(shape));
      infer = static_cast<std::int64_t>(i);
    } else {
      TG_CHECK(target[i] >= 0, "reshape: negative size in {}", shape_str(shape));
      known *= target[i];
    }
  }
  if (infer >= 0) {
    TG_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape {} into {}", x.str(), shape_str(shape));
    target[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  TG_CHECK(shape_numel(target) == x.numel(), "reshape: cannot reshape {} ({} elements) into {}", x.str(), x.numel(),
           shape_str(shape));
  if (target == x.shape()) return x;
  const Tensor xc = x.contiguous();
  TensorList outputs{xc.as_strided(target, contiguous_strides(target), xc.offset())};
  tape().record("reshape", {x}, outputs, [xshape = x.shape()](const TensorList& g, const std::vector<bool>&) {
    return TensorList{reshape(g[0], xshape)};
  });
  return outputs[0];
}

Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1) {
  check_defined("transpose", x, "x");
  const std::int64_t d0 = normalize_dim("transpose", dim0, x.dim());
  const std::int64_t d1 = normalize_dim("transpose", dim1, x.dim());
  if (d0 == d1) return x;
  Shape shape = x.shape(), strides = x.strides();
  std::swap(shape[static_cast<std::size_t>(d0)], shape[static_cast<std::size_t>(d1)]);
  std::swap(strides[static_cast<std::size_t>(d0)], strides[static_cast<std::size_t>(d1)]);
  TensorList outputs{x.as_strided(shape, strides, x.offset())};
  tape().record("transpose", {x}, outputs, [d0, d1](const TensorList& g, const std::vector<bool>&) {
    return TensorList{transpose(g[0], d0, d1)};
  });
  return outputs[0];
}

Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length) {
  check_defined("slice", x, "x");
  const std::int64_t d = normalize_dim("slice", dim, x.dim());
  const std::int64_t n = x.size(d);
  TG_CHECK(start >= 0 && length >= 0 && start + length <= n,
           "slice: [{}, {}) is out of range for dimension {} of {} (size {})", start, start + length, dim, x.str(), n);
  Shape shape = x.shape();
  shape[static_cast<std::size_t>(d)] = length;
  TensorList outputs{x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[static_cast<std::size_t>(d)])};
  tape().record("slice", {x}, outputs, [xshape = x.shape(), d, start](const TensorList& g, const std::vector<bool>&) {
    return TensorList{slice_backward(g[0], xshape, d, start)};
  });
  return outputs[0];
}

Tensor concat(const TensorList& xs, std::int64_t dim) {
  TG_CHECK(!xs.empty(), "concat: no tensors given");
  for (std::size_t i = 0; i < xs.size(); ++i) check_defined("concat", xs[i], "an input");
  const Tensor& first = xs[0];
  const std::int64_t d = normalize_dim("concat", dim, first.dim());
  Shape shape = first.shape();
  shape[static_cast<std::size_t>(d)] = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    TG_CHECK(x.device() == first.device() && x.dtype() == first.dtype() && x.dim() == first.dim(),
             "concat: input {} is {} but input 0 is {}", i, x.str(), first.str());
    for (std::int64_t k = 0; k < x.dim(); ++k) {
      TG_CHECK(k == d || x.size(k) == first.size(k), "concat: input {} {} does not match input 0 {} outside dimension {}",
               i, x.str(), first.str(), d);
    }
    shape[static_cast<std::size_t>(d)] += x.size(d);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  std::vector<std::int64_t> starts;
  std::int64_t at = 0;
  for (const Tensor& x : xs) {
    starts.push_back(at);
    if (x.numel() > 0) {
      Tensor window = out.as_strided(x.shape(), out.strides(), at * out.strides()[static_cast<std::size_t>(d)]);
      backend_of(x).copy(x, window);
    }
    at += x.size(d);
  }
  TensorList outputs{out};
  std::vector<std::int64_t> lengths;
  for (const Tensor& x : xs) lengths.push_back(x.size(d));
  tape().record("concat", xs, outputs, [d, starts, lengths](const TensorList& g, const std::vector<bool>& needs) {
    TensorList dxs(starts.size());
    for (std::size_t i = 0; i < starts.size(); ++i) {
      if (needs[i]) dxs[i] = slice(g[0], d, starts[i], lengths[i]);
    }
    return dxs;
  });
  return outputs[0];
}

Tensor contiguous(const Tensor& x) {
  check_defined("contiguous", x, "x");
  if (x.is_contiguous()) return x;
  TensorList outputs{x.clone()};
  tape().record("contiguous", {x}, outputs, [](const TensorList& g, const std::vector<bool>&) { return TensorList{g[0]}; });
  return outputs[0];
}

}  // namespace tg

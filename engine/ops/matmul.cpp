// Matrix products on cuBLAS / OpenBLAS. Backward rules are matrix products again, so second order
// needs nothing more.
#include <atomic>

#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

std::atomic<std::uint64_t> flops_dispatched{0};
void count_flops(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k) {
  flops_dispatched.fetch_add(static_cast<std::uint64_t>(2 * batch * m * n * k), std::memory_order_relaxed);
}

// a, b: both 2-D or both 3-D with equal batch; contiguous not required (copied if needed).
Tensor matmul_core(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const std::int64_t r = a.dim();
  const std::int64_t m = ta ? a.size(r - 1) : a.size(r - 2);
  const std::int64_t k = ta ? a.size(r - 2) : a.size(r - 1);
  const std::int64_t kb = tb ? b.size(r - 1) : b.size(r - 2);
  const std::int64_t n = tb ? b.size(r - 2) : b.size(r - 1);
  TG_CHECK(k == kb, "matmul: inner dimensions differ: a {}{} has {} but b {}{} has {}", a.str(),
           ta ? " (transposed)" : "", k, b.str(), tb ? " (transposed)" : "", kb);
  Shape out_shape = r == 3 ? Shape{a.size(0), m, n} : Shape{m, n};
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (out.numel() > 0) {
    if (k == 0) {
      out.fill_(0.0);
    } else {
      backend_of(a).gemm(a.contiguous(), b.contiguous(), out, ta, tb, 1.0, 0.0);
      count_flops(r == 3 ? a.size(0) : 1, m, n, k);
    }
  }

  TensorList outputs{out};
  tape().record("matmul", {a, b}, outputs, [a, b, ta, tb](const TensorList& g, const std::vector<bool>& needs) {
    // out = op(a) op(b):  d op(a) = dy op(b)^T,  d op(b) = op(a)^T dy.
    const Tensor& dy = g[0];
    Tensor da, db;
    if (needs[0]) da = ta ? matmul(b, dy, tb, true) : matmul(dy, b, false, !tb);
    if (needs[1]) db = tb ? matmul(dy, a, true, ta) : matmul(a, dy, !ta, false);
    return TensorList{da, db};
  });
  return outputs[0];
}

}  // namespace

std::uint64_t matmul_flops_dispatched() { return flops_dispatched.load(std::memory_order_relaxed); }

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  check_floating("matmul", a, "a");
  check_floating("matmul", b, "b");
  check_same("matmul", {{&a, "a"}, {&b, "b"}});
  TG_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dimensions, got a {} and b {}",
           a.str(), b.str());
  if (a.dim() == 2 && b.dim() == 2) return matmul_core(a, b, transpose_a, transpose_b);

  if (b.dim() == 2) {
    // A shared weight: fold a's batch dimensions into its rows.
    TG_CHECK(!transpose_a, "matmul: transpose_a with a batched a {} and a 2-D b {} is not supported", a.str(),
             b.str());
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    Tensor out = matmul_core(reshape(a, {-1, a.size(-1)}), b, false, transpose_b);
    out_shape.push_back(out.size(1));
    return reshape(out, out_shape);
  }

  TG_CHECK(a.dim() == b.dim(), "matmul: batched operands need the same rank, got a {} and b {}", a.str(), b.str());
  Shape batch(a.shape().begin(), a.shape().end() - 2);
  TG_CHECK(Shape(b.shape().begin(), b.shape().end() - 2) == batch,
           "matmul: batch dimensions differ: a {} and b {}", a.str(), b.str());
  const std::int64_t nb = shape_numel(batch);
  Tensor a3 = reshape(a, {nb, a.size(-2), a.size(-1)});
  Tensor b3 = reshape(b, {nb, b.size(-2), b.size(-1)});
  Tensor out = matmul_core(a3, b3, transpose_a, transpose_b);
  Shape out_shape = batch;
  out_shape.push_back(out.size(1));
  out_shape.push_back(out.size(2));
  return reshape(out, out_shape);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating("linear", x, "x");
  check_floating("linear", weight, "weight");
  check_same("linear", {{&x, "x"}, {&weight, "weight"}, {&bias, "bias"}});
  TG_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got {}", weight.str());
  TG_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: x {} does not end in in_features {} of weight {}",
           x.str(), weight.size(1), weight.str());
  if (bias.defined()) {
    check_floating("linear", bias, "bias");
    TG_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "linear: bias {} does not match weight {}",
             bias.str(), weight.str());
  }
  const std::int64_t in = weight.size(1), out_features = weight.size(0);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  const std::int64_t rows = shape_numel(out_shape);
  out_shape.push_back(out_features);

  // One GEMM with the bias pre-broadcast into the output (beta = 1): no separate bias pass.
  const Tensor xc = x.contiguous();
  const Tensor x2 = xc.as_strided({rows, in}, {in, 1}, xc.offset());
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (out.numel() > 0) {
    Tensor out2 = out.as_strided({rows, out_features}, {out_features, 1}, 0);
    Backend& be = backend_of(x);
    if (bias.defined()) {
      be.copy(broadcast_view(bias, {rows, out_features}), out2);
    }
    if (in > 0) {
      be.gemm(x2, weight.contiguous(), out2, false, true, 1.0, bias.defined() ? 1.0 : 0.0);
      count_flops(1, rows, out_features, in);
    } else if (!bias.defined()) {
      out.fill_(0.0);
    }
  }

  TensorList outputs{out};
  tape().record("linear", {x, weight, bias}, outputs,
                [x, weight, bias, rows, in, out_features](const TensorList& g, const std::vector<bool>& needs) {
                  Tensor dy2 = reshape(g[0], {rows, out_features});
                  Tensor dx, dw, db;
                  if (needs[0]) dx = reshape(matmul(dy2, weight), x.shape());
                  if (needs[1]) dw = matmul(dy2, reshape(x, {rows, in}), true, false);
                  if (needs[2]) db = sum(dy2, 0);
                  return TensorList{dx, dw, db};
                });
  return outputs[0];
}

}  // namespace tg

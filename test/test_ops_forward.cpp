// Every op's CPU forward against a naive float64 reference written here from the definitions, on
// random odd shapes, in float32 (tolerance for float32 rounding) and float64 (near exact).
#include <catch2/catch_test_macros.hpp>

#include <array>
#include <cmath>

#include "op_cases.h"
#include "support.h"

using namespace tgtest;
using namespace tg;

namespace {

// Row-major index helpers for the references.
std::vector<double> vals(const Tensor& t) { return values(t); }

// Runs `check(dtype, tolerance)` for float32 and float64.
template <class F>
void for_both_dtypes(F&& check) {
  check(DType::f32, 2e-6);
  check(DType::f64, 1e-13);
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

TEST_CASE("matmul forward matches a naive triple loop", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(1);
    // [batch, m, k, n]: odd sizes, and many tiny products of attention's per-head shapes.
    const std::vector<std::array<std::int64_t, 4>> shapes = {
        {3, 7, 13, 5}, {300, 4, 32, 4}, {300, 4, 4, 32}};
    for (const auto& [batch, m, k, n] : shapes) {
      for (int ta = 0; ta < 2; ++ta) {
        for (int tb = 0; tb < 2; ++tb) {
          Tensor a = random(rng, ta ? Shape{batch, k, m} : Shape{batch, m, k}, dt);
          Tensor b = random(rng, tb ? Shape{batch, n, k} : Shape{batch, k, n}, dt);
          const auto A = vals(a), B = vals(b);
          std::vector<double> ref(static_cast<std::size_t>(batch * m * n));
          for (std::int64_t z = 0; z < batch; ++z)
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (std::int64_t p = 0; p < k; ++p) {
                  const double av = ta ? A[(z * k + p) * m + i] : A[(z * m + i) * k + p];
                  const double bv = tb ? B[(z * n + j) * k + p] : B[(z * k + p) * n + j];
                  acc += av * bv;
                }
                ref[(z * m + i) * n + j] = acc;
              }
          CAPTURE(batch, m, k, n, ta, tb, dtype_name(dt));
          CHECK(rel_error(vals(matmul(a, b, ta, tb)), ref) < tol);
        }
      }
    }
  });
}

TEST_CASE("linear forward is x W^T + b", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(2);
    Tensor x = random(rng, {3, 5, 11}, dt), w = random(rng, {9, 11}, dt), b = random(rng, {9}, dt);
    const auto X = vals(x), W = vals(w), B = vals(b);
    std::vector<double> ref(15 * 9);
    for (int r = 0; r < 15; ++r)
      for (int o = 0; o < 9; ++o) {
        double acc = B[o];
        for (int i = 0; i < 11; ++i) acc += X[r * 11 + i] * W[o * 11 + i];
        ref[r * 9 + o] = acc;
      }
    Tensor y = linear(x, w, b);
    CHECK(y.shape() == Shape{3, 5, 9});
    CHECK(rel_error(vals(y), ref) < tol);
  });
}

TEST_CASE("binary ops broadcast like NumPy", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(3);
    struct Pair {
      Shape a, b, out;
    };
    const std::vector<Pair> pairs = {{{4, 5}, {4, 5}, {4, 5}},       {{4, 5}, {5}, {4, 5}},
                                     {{3, 1, 5}, {4, 1}, {3, 4, 5}}, {{2, 3, 4}, {}, {2, 3, 4}},
                                     {{1}, {3, 2}, {3, 2}},          {{2, 1, 3, 1}, {5, 1, 7}, {2, 5, 3, 7}},
                                     // Per-row values and repeated rows on either side, over more rows
                                     // than one chunk of the CPU kernels' thread pool.
                                     {{300, 70}, {300, 1}, {300, 70}}, {{300, 1}, {300, 70}, {300, 70}},
                                     {{70}, {300, 70}, {300, 70}},     {{300, 1}, {70}, {300, 70}},
                                     {{}, {3000}, {3000}}};
    for (const Pair& p : pairs) {
      Tensor a = random(rng, p.a, dt), b = random(rng, p.b, dt, 0.5, 2.0);
      const auto A = vals(a), B = vals(b);
      const std::int64_t n = shape_numel(p.out);
      const std::size_t rank = p.out.size();
      // Reference: map every output index back into each input by the broadcasting rule.
      auto index_into = [&](const Shape& s, std::int64_t flat) {
        std::int64_t idx = 0, stride = 1;
        std::int64_t rem = flat;
        std::vector<std::int64_t> coord(rank);
        for (std::size_t d = rank; d-- > 0;) {
          coord[d] = rem % p.out[d];
          rem /= p.out[d];
        }
        for (std::size_t d = s.size(); d-- > 0;) {
          const std::int64_t c = s[d] == 1 ? 0 : coord[d + rank - s.size()];
          idx += c * stride;
          stride *= s[d];
        }
        return static_cast<std::size_t>(idx);
      };
      std::vector<double> radd(n), rsub(n), rmul(n), rdiv(n);
      for (std::int64_t i = 0; i < n; ++i) {
        const double x = A[index_into(p.a, i)], y = B[index_into(p.b, i)];
        radd[i] = x + y;
        rsub[i] = x - y;
        rmul[i] = x * y;
        rdiv[i] = x / y;
      }
      CAPTURE(shape_str(p.a), shape_str(p.b));
      CHECK(add(a, b).shape() == p.out);
      CHECK(rel_error(vals(add(a, b)), radd) < tol);
      CHECK(rel_error(vals(sub(a, b)), rsub) < tol);
      CHECK(rel_error(vals(mul(a, b)), rmul) < tol);
      CHECK(rel_error(vals(div(a, b)), rdiv) < tol);
    }
    // Strided (transposed) inputs read the right elements.
    Tensor m = random(rng, {3, 4}, dt), t = random(rng, {4, 3}, dt);
    const auto M = vals(m), T = vals(t);
    std::vector<double> ref(12);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 3; ++j) ref[i * 3 + j] = M[j * 4 + i] + T[i * 3 + j];
    CHECK(rel_error(vals(add(transpose(m, 0, 1), t)), ref) < tol);
  });
}

TEST_CASE("unary ops and activations match their definitions", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(4);
    Tensor x = random(rng, {5, 7}, dt, -3.0, 3.0);
    Tensor p = random(rng, {5, 7}, dt, 0.1, 3.0);
    const auto X = vals(x), P = vals(p);
    auto ref = [&](const std::vector<double>& in, auto f) {
      std::vector<double> r(in.size());
      for (std::size_t i = 0; i < in.size(); ++i) r[i] = f(in[i]);
      return r;
    };
    CHECK(rel_error(vals(neg(x)), ref(X, [](double v) { return -v; })) < tol);
    CHECK(rel_error(vals(exp(x)), ref(X, [](double v) { return std::exp(v); })) < tol);
    CHECK(rel_error(vals(log(p)), ref(P, [](double v) { return std::log(v); })) < tol);
    CHECK(rel_error(vals(abs(x)), ref(X, [](double v) { return std::fabs(v); })) < tol);
    CHECK(rel_error(vals(sqrt(p)), ref(P, [](double v) { return std::sqrt(v); })) < tol);
    CHECK(rel_error(vals(square(x)), ref(X, [](double v) { return v * v; })) < tol);
    CHECK(rel_error(vals(sign(x)), ref(X, [](double v) { return double((v > 0) - (v < 0)); })) < tol);
    CHECK(rel_error(vals(scale(x, 0.37)), ref(X, [](double v) { return 0.37 * v; })) < tol);
    CHECK(rel_error(vals(add_scalar(x, -1.25)), ref(X, [](double v) { return v - 1.25; })) < tol);
    CHECK(rel_error(vals(affine(x, 2.5, 0.5)), ref(X, [](double v) { return 2.5 * v + 0.5; })) < tol);
    CHECK(rel_error(vals(relu(x)), ref(X, [](double v) { return v > 0 ? v : 0.0; })) < tol);
    CHECK(rel_error(vals(gelu(x)), ref(X, gelu_ref)) < tol);
    // The fused derivative kernels against derivatives of the definitions.
    Tensor dy = random(rng, {5, 7}, dt);
    const auto DY = vals(dy);
    std::vector<double> rrelu(X.size()), rgelu(X.size());
    for (std::size_t i = 0; i < X.size(); ++i) {
      rrelu[i] = X[i] > 0 ? DY[i] : 0.0;
      const double cdf = 0.5 * (1 + std::erf(X[i] / std::sqrt(2.0)));
      const double pdf = std::exp(-0.5 * X[i] * X[i]) / std::sqrt(2 * M_PI);
      rgelu[i] = DY[i] * (cdf + X[i] * pdf);
    }
    CHECK(rel_error(vals(relu_backward(x, dy)), rrelu) < tol);
    CHECK(rel_error(vals(gelu_backward(x, dy)), rgelu) < tol);
  });
}

TEST_CASE("reductions match direct sums", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(5);
    Tensor x = random(rng, {3, 4, 5}, dt);
    const auto X = vals(x);
    double total = 0, squares = 0;
    for (double v : X) {
      total += v;
      squares += v * v;
    }
    CHECK(std::fabs(sum(x).item() - total) < tol * 60);
    CHECK(std::fabs(mean(x).item() - total / 60) < tol);
    CHECK(std::fabs(l2_norm(x).item() - std::sqrt(squares)) < tol * 10);
    for (int d = 0; d < 3; ++d) {
      Shape out = x.shape();
      out.erase(out.begin() + d);
      std::vector<double> ref(static_cast<std::size_t>(shape_numel(out)), 0.0);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j)
          for (int k = 0; k < 5; ++k) {
            const int o = d == 0 ? j * 5 + k : d == 1 ? i * 5 + k : i * 4 + j;
            ref[o] += X[(i * 4 + j) * 5 + k];
          }
      CAPTURE(d);
      Tensor s = sum(x, d);
      CHECK(s.shape() == out);
      CHECK(rel_error(vals(s), ref) < tol);
      Tensor m = mean(x, d, true);
      CHECK(m.dim() == 3);
      for (double& r : ref) r /= static_cast<double>(x.size(d));
      CHECK(rel_error(vals(m), ref) < tol);
    }
    // sum_to is the adjoint of broadcasting: sum_to(x, [4, 1]) sums dim 0 and dim 2.
    std::vector<double> ref(4, 0.0);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j)
        for (int k = 0; k < 5; ++k) ref[j] += X[(i * 4 + j) * 5 + k];
    Tensor st = sum_to(x, {4, 1});
    CHECK(st.shape() == Shape{4, 1});
    CHECK(rel_error(vals(st), ref) < tol);
    // argmax picks the first maximum of each row.
    Tensor a = Tensor::from_vector<double>({1, 3, 3, 0, -1, -5, -1, -2}, {2, 4});
    CHECK(argmax(a.to(dt)).to_vector<std::int32_t>() == std::vector<std::int32_t>{1, 0});
  });
}

TEST_CASE("softmax and cross-entropy match their definitions", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(6);
    const int n = 9, v = 13;
    Tensor x = random(rng, {n, v}, dt, -4, 4);
    Tensor t = random_ids(rng, {n}, v);
    const auto X = vals(x);
    const auto T = values(t);
    std::vector<double> ref(n * v);
    double loss = 0;
    for (int i = 0; i < n; ++i) {
      double z = 0;
      for (int j = 0; j < v; ++j) z += std::exp(X[i * v + j]);
      for (int j = 0; j < v; ++j) ref[i * v + j] = std::exp(X[i * v + j]) / z;
      loss += -std::log(ref[i * v + static_cast<int>(T[i])]);
    }
    CHECK(rel_error(vals(softmax(x)), ref) < tol);
    CHECK(std::fabs(cross_entropy(x, t).item() - loss / n) < tol * 10);
    // Large logits stay finite (max-subtracted).
    Tensor big = affine(x, 1.0, 500.0);
    CHECK(std::isfinite(cross_entropy(big, t).item()));
    CHECK(std::fabs(cross_entropy(big, t).item() - loss / n) < 1e-3);
  });
}

TEST_CASE("layernorm matches (x - mean) / sqrt(var + eps) * gamma + beta", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(7);
    const int rows = 11, c = 37;
    Tensor x = random(rng, {rows, c}, dt, -3, 5), g = random(rng, {c}, dt), b = random(rng, {c}, dt);
    const auto X = vals(x), G = vals(g), B = vals(b);
    std::vector<double> ref(rows * c);
    for (int r = 0; r < rows; ++r) {
      double m = 0, var = 0;
      for (int i = 0; i < c; ++i) m += X[r * c + i] / c;
      for (int i = 0; i < c; ++i) var += (X[r * c + i] - m) * (X[r * c + i] - m) / c;
      for (int i = 0; i < c; ++i) ref[r * c + i] = (X[r * c + i] - m) / std::sqrt(var + 1e-5) * G[i] + B[i];
    }
    CHECK(rel_error(vals(layernorm(x, g, b, 1e-5)), ref) < tol * 4);
  });
}

TEST_CASE("add_layernorm returns x + residual and its layernorm", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(17);
    const int rows = 13, c = 29;
    Tensor x = random(rng, {rows, c}, dt, -3, 5), res = random(rng, {rows, c}, dt, -2, 2);
    Tensor g = random(rng, {c}, dt), b = random(rng, {c}, dt);
    const auto X = vals(x), R = vals(res), G = vals(g), B = vals(b);
    std::vector<double> h(rows * c), ref(rows * c);
    for (int r = 0; r < rows; ++r) {
      double m = 0, var = 0;
      for (int i = 0; i < c; ++i) h[r * c + i] = X[r * c + i] + R[r * c + i];
      for (int i = 0; i < c; ++i) m += h[r * c + i] / c;
      for (int i = 0; i < c; ++i) var += (h[r * c + i] - m) * (h[r * c + i] - m) / c;
      for (int i = 0; i < c; ++i) ref[r * c + i] = (h[r * c + i] - m) / std::sqrt(var + 1e-5) * G[i] + B[i];
    }
    const AddLayerNorm out = add_layernorm(x, res, g, b, 1e-5);
    CHECK(rel_error(vals(out.sum), h) < tol);
    CHECK(rel_error(vals(out.normed), ref) < tol * 4);
  });
}

TEST_CASE("add_layernorm changes no bits against add followed by layernorm on the CPU", "[ops][fused]") {
  // The fused kernels round exactly as the separate ops do: same sum, same statistics, and the two
  // gradients of the sum added once. So fusing in the model leaves CPU training runs unchanged.
  Rng rng(19);
  const Tensor x0 = random(rng, {4, 3, 32}, DType::f32, -2, 2), r0 = random(rng, {4, 3, 32}, DType::f32);
  const Tensor g0 = random(rng, {32}, DType::f32), b0 = random(rng, {32}, DType::f32);
  const Tensor w = random(rng, {4, 3, 32}, DType::f32);
  auto run = [&](bool fused) {
    tape().clear();
    TensorList in = {x0.clone(), r0.clone(), g0.clone(), b0.clone()};
    for (Tensor& t : in) t.set_requires_grad(true);
    Tensor h, y;
    if (fused) {
      const AddLayerNorm o = add_layernorm(in[0], in[1], in[2], in[3]);
      h = o.sum;
      y = o.normed;
    } else {
      h = add(in[0], in[1]);
      y = layernorm(h, in[2], in[3]);
    }
    const Tensor loss = sum(add(mul(h, w), mul(y, y)));
    TensorList out = grad({loss}, in);
    out.push_back(h);
    out.push_back(y);
    tape().clear();
    return out;
  };
  const TensorList fused = run(true), separate = run(false);
  for (std::size_t k = 0; k < fused.size(); ++k) {
    INFO("output " << k);
    CHECK(values(fused[k]) == values(separate[k]));
  }
}

TEST_CASE("bias_gelu is gelu(x + bias) and its derivative kernel dy * gelu'(x + bias)", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(18);
    const int rows = 9, c = 23;
    Tensor x = random(rng, {rows, c}, dt, -3, 3), b = random(rng, {c}, dt), dy = random(rng, {rows, c}, dt);
    const auto X = vals(x), B = vals(b), DY = vals(dy);
    std::vector<double> ref(rows * c), dref(rows * c);
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < c; ++i) {
        const double h = X[r * c + i] + B[i];
        ref[r * c + i] = gelu_ref(h);
        const double cdf = 0.5 * (1 + std::erf(h / std::sqrt(2.0)));
        const double pdf = std::exp(-0.5 * h * h) / std::sqrt(2 * M_PI);
        dref[r * c + i] = DY[r * c + i] * (cdf + h * pdf);
      }
    }
    CHECK(rel_error(vals(bias_gelu(x, b)), ref) < tol * 2);
    // The backward kernel, reached through the op's (first-order, unrecorded) backward rule.
    tape().clear();
    Tensor xg = x.detach().set_requires_grad(true);
    const TensorList grads = grad({bias_gelu(xg, b)}, {xg}, {dy});
    CHECK(rel_error(vals(grads[0]), dref) < tol * 2);
    tape().clear();
  });
}

TEST_CASE("causal self-attention matches per-head softmax(q k^T / sqrt(d)) v", "[ops][forward]") {
  for_both_dtypes([](DType dt, double tol) {
    Rng rng(8);
    const int B = 3, T = 7, H = 3, D = 5, C = H * D;
    Tensor qkv = random(rng, {B, T, 3 * C}, dt, -2, 2);
    const auto Q = vals(qkv);
    std::vector<double> ref(B * T * C, 0.0);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < T; ++i) {
          std::vector<double> s(i + 1);
          double z = 0;
          for (int j = 0; j <= i; ++j) {
            double dot = 0;
            for (int e = 0; e < D; ++e) dot += Q[(b * T + i) * 3 * C + h * D + e] * Q[(b * T + j) * 3 * C + C + h * D + e];
            s[j] = std::exp(dot / std::sqrt(double(D)));
            z += s[j];
          }
          for (int j = 0; j <= i; ++j)
            for (int e = 0; e < D; ++e) ref[(b * T + i) * C + h * D + e] += s[j] / z * Q[(b * T + j) * 3 * C + 2 * C + h * D + e];
        }
    CHECK(rel_error(vals(causal_self_attention(qkv, H)), ref) < tol * 4);
  });
}

TEST_CASE("embedding gathers rows", "[ops][forward]") {
  Rng rng(9);
  Tensor w = random(rng, {6, 4});
  Tensor ids = Tensor::from_vector<std::int32_t>({5, 0, 0, 3, 2, 5}, {2, 3});
  Tensor e = embedding(ids, w);
  CHECK(e.shape() == Shape{2, 3, 4});
  const auto W = vals(w), E = vals(e);
  const std::vector<int> id = {5, 0, 0, 3, 2, 5};
  for (int n = 0; n < 6; ++n)
    for (int c = 0; c < 4; ++c) CHECK(E[n * 4 + c] == W[id[n] * 4 + c]);
}

TEST_CASE("views: reshape, transpose, slice, concat", "[ops][forward]") {
  Rng rng(10);
  Tensor x = random(rng, {2, 3, 4});
  const auto X = vals(x);
  CHECK(vals(reshape(x, {6, -1})) == X);
  Tensor t = transpose(x, 0, 2);  // [4, 3, 2]
  CHECK(!t.is_contiguous());
  const auto Tv = vals(t);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(Tv[(k * 3 + j) * 2 + i] == X[(i * 3 + j) * 4 + k]);
  Tensor s = slice(x, 2, 1, 2);  // [2, 3, 2]
  const auto S = vals(s);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k) CHECK(S[(i * 3 + j) * 2 + k] == X[(i * 3 + j) * 4 + k + 1]);
  Tensor y = random(rng, {2, 1, 4});
  Tensor c = concat({x, y}, 1);  // [2, 4, 4]
  const auto Cv = vals(c), Y = vals(y);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k) CHECK(Cv[(i * 4 + j) * 4 + k] == (j < 3 ? X[(i * 3 + j) * 4 + k] : Y[i * 4 + k]));
  CHECK(vals(contiguous(t)) == Tv);
  CHECK(contiguous(t).is_contiguous());
}

// The ops without a gradient to check (op_cases.h's forward_cases) against their plain loops, exactly.
TEST_CASE("ops without gradients match plain loops exactly", "[ops][forward]") {
  for (const ForwardCase& op : forward_cases()) {
    DYNAMIC_SECTION(op.name) {
      Rng rng(8);
      const TensorList inputs = op.inputs(rng);
      std::vector<std::vector<double>> x;
      for (const Tensor& t : inputs) x.push_back(values(t));
      const Tensor out = op.fn(inputs);
      CHECK(values(out) == op.reference(x));
      for (std::size_t k = 0; k < inputs.size(); ++k) CHECK(values(inputs[k]) == x[k]);  // inputs untouched
    }
  }
}

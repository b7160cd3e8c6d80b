#include "op_cases.h"

#include <catch2/catch_test_macros.hpp>

#include <cctype>

#include "optim/neural_amplify.h"  // an op of the methods layer, tested like the engine's

namespace tgtest {

using namespace tg;

namespace {

// Positive inputs for log / sqrt / div denominators.
Tensor positive(Rng& rng, const Shape& s) { return random(rng, s, DType::f64, 0.5, 2.0); }

// The name's first word: the op a case checks unless it says otherwise.
std::string first_word(const std::string& name) {
  std::size_t end = 0;
  while (end < name.size() && (std::isalnum(static_cast<unsigned char>(name[end])) || name[end] == '_')) ++end;
  return name.substr(0, end);
}

std::vector<OpCase> build() {
  std::vector<OpCase> c;
  auto add_case = [&](std::string name, std::function<TensorList(Rng&)> in, Function fn,
                      std::vector<std::string> ops = {}, std::string no_second_order = {}) {
    if (ops.empty()) ops.push_back(first_word(name));
    c.push_back(OpCase{std::move(name), std::move(in), std::move(fn), std::move(ops), std::move(no_second_order)});
  };

  // ---- matrix products
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      add_case(
          "matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb),
          [=](Rng& r) {
            return TensorList{random(r, ta ? Shape{5, 3} : Shape{3, 5}), random(r, tb ? Shape{7, 5} : Shape{5, 7})};
          },
          [=](const TensorList& x) { return matmul(x[0], x[1], ta, tb); });
    }
  }
  add_case("matmul batched", [](Rng& r) { return TensorList{random(r, {2, 3, 4, 5}), random(r, {2, 3, 5, 2})}; },
           [](const TensorList& x) { return matmul(x[0], x[1]); });
  add_case("matmul batched transposed", [](Rng& r) { return TensorList{random(r, {3, 5, 4}), random(r, {3, 2, 5})}; },
           [](const TensorList& x) { return matmul(x[0], x[1], true, true); });
  add_case("matmul shared weight", [](Rng& r) { return TensorList{random(r, {2, 3, 5}), random(r, {5, 4})}; },
           [](const TensorList& x) { return matmul(x[0], x[1]); });
  add_case("linear", [](Rng& r) { return TensorList{random(r, {2, 3, 5}), random(r, {4, 5}), random(r, {4})}; },
           [](const TensorList& x) { return linear(x[0], x[1], x[2]); });
  add_case("linear no bias", [](Rng& r) { return TensorList{random(r, {3, 5}), random(r, {6, 5})}; },
           [](const TensorList& x) { return linear(x[0], x[1]); });

  // ---- elementwise with broadcasting
  add_case("add broadcast", [](Rng& r) { return TensorList{random(r, {3, 1, 5}), random(r, {4, 1})}; },
           [](const TensorList& x) { return add(x[0], x[1]); });
  add_case("sub bias", [](Rng& r) { return TensorList{random(r, {4, 5}), random(r, {5})}; },
           [](const TensorList& x) { return sub(x[0], x[1]); });
  add_case("mul broadcast", [](Rng& r) { return TensorList{random(r, {2, 3, 4}), random(r, {3, 1})}; },
           [](const TensorList& x) { return mul(x[0], x[1]); });
  add_case("mul scalar tensor", [](Rng& r) { return TensorList{random(r, {3, 4}), random(r, {})}; },
           [](const TensorList& x) { return mul(x[0], x[1]); });
  add_case("div broadcast", [](Rng& r) { return TensorList{random(r, {3, 4}), positive(r, {3, 1})}; },
           [](const TensorList& x) { return div(x[0], x[1]); });
  add_case("mul transposed view", [](Rng& r) { return TensorList{random(r, {4, 3}), random(r, {3, 4})}; },
           [](const TensorList& x) { return mul(transpose(x[0], 0, 1), x[1]); });
  add_case("neg", [](Rng& r) { return TensorList{random(r, {7})}; }, [](const TensorList& x) { return neg(x[0]); });
  add_case("exp", [](Rng& r) { return TensorList{random(r, {3, 5})}; }, [](const TensorList& x) { return exp(x[0]); });
  add_case("log", [](Rng& r) { return TensorList{positive(r, {3, 5})}; }, [](const TensorList& x) { return log(x[0]); });
  add_case("abs", [](Rng& r) { return TensorList{random(r, {3, 5})}; }, [](const TensorList& x) { return abs(x[0]); });
  add_case("sqrt", [](Rng& r) { return TensorList{positive(r, {3, 5})}; }, [](const TensorList& x) { return sqrt(x[0]); });
  add_case("square", [](Rng& r) { return TensorList{random(r, {3, 5})}; },
           [](const TensorList& x) { return square(x[0]); });
  add_case("affine", [](Rng& r) { return TensorList{random(r, {3, 5})}; },
           [](const TensorList& x) { return affine(x[0], -1.7, 0.3); });
  add_case("scale", [](Rng& r) { return TensorList{random(r, {3, 5})}; },
           [](const TensorList& x) { return scale(x[0], 2.3); });
  add_case("add_scalar", [](Rng& r) { return TensorList{random(r, {3, 5})}; },
           [](const TensorList& x) { return add_scalar(x[0], -0.4); });
  // Zero gradient (almost everywhere): the rule must give zeros, as finite differences away from 0 do.
  add_case("sign", [](Rng& r) { return TensorList{random(r, {3, 5})}; }, [](const TensorList& x) { return sign(x[0]); });
  add_case("relu", [](Rng& r) { return TensorList{random(r, {4, 5})}; }, [](const TensorList& x) { return relu(x[0]); });
  add_case("gelu", [](Rng& r) { return TensorList{random(r, {4, 5}, DType::f64, -3, 3)}; },
           [](const TensorList& x) { return gelu(x[0]); });
  // The fused derivative kernels as ops of their own: relu_backward's derivatives are 0 in x and
  // [x > 0] in dy; gelu_backward's second derivative would be gelu's third, which is not provided.
  add_case("relu_backward", [](Rng& r) { return TensorList{random(r, {4, 5}), random(r, {4, 5})}; },
           [](const TensorList& x) { return relu_backward(x[0], x[1]); });
  add_case(
      "gelu_backward", [](Rng& r) { return TensorList{random(r, {4, 5}, DType::f64, -3, 3), random(r, {4, 5})}; },
      [](const TensorList& x) { return gelu_backward(x[0], x[1]); }, {}, "gelu_grad2");

  // ---- reductions
  add_case("sum", [](Rng& r) { return TensorList{random(r, {3, 4, 5})}; }, [](const TensorList& x) { return sum(x[0]); });
  add_case("sum dim 1", [](Rng& r) { return TensorList{random(r, {3, 4, 5})}; },
           [](const TensorList& x) { return sum(x[0], 1); });
  add_case("mean dim -1 keepdim", [](Rng& r) { return TensorList{random(r, {3, 4, 5})}; },
           [](const TensorList& x) { return mean(x[0], -1, true); });
  add_case("mean", [](Rng& r) { return TensorList{random(r, {3, 7})}; }, [](const TensorList& x) { return mean(x[0]); });
  add_case("l2_norm", [](Rng& r) { return TensorList{random(r, {4, 6})}; },
           [](const TensorList& x) { return l2_norm(x[0]); });
  add_case("sum_to", [](Rng& r) { return TensorList{random(r, {2, 3, 4})}; },
           [](const TensorList& x) { return sum_to(x[0], {3, 1}); });
  add_case("expand", [](Rng& r) { return TensorList{random(r, {3, 1})}; },
           [](const TensorList& x) { return expand(x[0], {2, 3, 4}); });

  // ---- softmax, loss, model layers
  add_case("softmax", [](Rng& r) { return TensorList{random(r, {4, 7}, DType::f64, -2, 2)}; },
           [](const TensorList& x) { return softmax(x[0]); });
  // y need not be a softmax output: the kernel and its rule hold for any y.
  add_case("softmax_backward", [](Rng& r) { return TensorList{random(r, {3, 6}, DType::f64, 0.1, 1), random(r, {3, 6})}; },
           [](const TensorList& x) { return softmax_backward(x[0], x[1]); });
  add_case("cross_entropy", [](Rng& r) { return TensorList{random(r, {6, 5}, DType::f64, -2, 2), random_ids(r, {6}, 5)}; },
           [](const TensorList& x) { return cross_entropy(x[0], x[1]); });
  // Logits on both sides of 0 (s's two pieces). Then wide logits, and the loss times a scalar input:
  // the fused backward's dloss then depends on an input, so second order checks its d/ddloss too.
  add_case(
      "stablemax_cross_entropy",
      [](Rng& r) { return TensorList{random(r, {7, 6}, DType::f64, -3, 3), random_ids(r, {7}, 6)}; },
      [](const TensorList& x) { return stablemax_cross_entropy(x[0], x[1]); });
  add_case(
      "stablemax_cross_entropy scaled, wide logits",
      [](Rng& r) { return TensorList{random(r, {3, 11}, DType::f64, -40, 40), random_ids(r, {3}, 11), random(r, {})}; },
      [](const TensorList& x) { return mul(stablemax_cross_entropy(x[0], x[1]), x[2]); });
  add_case(
      "layernorm",
      [](Rng& r) { return TensorList{random(r, {2, 3, 6}, DType::f64, -2, 2), random(r, {6}), random(r, {6})}; },
      [](const TensorList& x) { return layernorm(x[0], x[1], x[2]); });
  // Both outputs feed the result (the sum's gradient meets layernorm's dx in the fused backward), and
  // once only the normed one (the sum's gradient is zero).
  add_case(
      "add_layernorm",
      [](Rng& r) {
        return TensorList{random(r, {2, 3, 6}, DType::f64, -2, 2), random(r, {2, 3, 6}), random(r, {6}),
                          random(r, {6})};
      },
      [](const TensorList& x) {
        const AddLayerNorm o = add_layernorm(x[0], x[1], x[2], x[3]);
        return add(mul(o.sum, o.sum), o.normed);
      });
  add_case(
      "add_layernorm normed only",
      [](Rng& r) { return TensorList{random(r, {3, 5}, DType::f64, -2, 2), random(r, {3, 5}), random(r, {5}), random(r, {5})}; },
      [](const TensorList& x) { return add_layernorm(x[0], x[1], x[2], x[3]).normed; });
  add_case(
      "add_layernorm, sum not an output",
      [](Rng& r) { return TensorList{random(r, {3, 5}, DType::f64, -2, 2), random(r, {3, 5}), random(r, {5}), random(r, {5})}; },
      [](const TensorList& x) { return add_layernorm(x[0], x[1], x[2], x[3], 1e-5, false).normed; });
  // LayerNorm's recorded backward: its derivatives are LayerNorm's second (the fused
  // layernorm_double_backward kernel); a third is not provided. dgamma (squared, so that its gradient
  // is not a multiple of dbeta's) and dbeta broadcast onto dx, so that one output carries all three.
  add_case(
      "layernorm_backward",
      [](Rng& r) { return TensorList{random(r, {2, 3, 6}), random(r, {2, 3, 6}, DType::f64, -2, 2), random(r, {6})}; },
      [](const TensorList& x) {
        const LayerNormGrads d = layernorm_backward(x[0], x[1], x[2]);
        return add(add(d.dx, mul(d.dgamma, d.dgamma)), scale(d.dbeta, 0.5));
      },
      {}, "layernorm_backward");
  add_case("bias_gelu", [](Rng& r) { return TensorList{random(r, {2, 3, 5}, DType::f64, -3, 3), random(r, {5})}; },
           [](const TensorList& x) { return bias_gelu(x[0], x[1]); });
  add_case(
      "causal_self_attention", [](Rng& r) { return TensorList{random(r, {2, 5, 12})}; },
      [](const TensorList& x) { return causal_self_attention(x[0], 2); });
  // Attention's recorded backward: its derivatives are attention's second (the fused
  // attention_double_backward kernel); a third is not provided.
  add_case(
      "causal_self_attention_backward",
      [](Rng& r) { return TensorList{random(r, {2, 5, 4}), random(r, {2, 5, 12})}; },
      [](const TensorList& x) { return causal_self_attention_backward(x[0], x[1], 2); }, {},
      "causal_self_attention_backward");
  add_case("embedding", [](Rng& r) { return TensorList{random_ids(r, {3, 4}, 6), random(r, {6, 5})}; },
           [](const TensorList& x) { return embedding(x[0], x[1]); });

  // ---- NeuralGrok's fused amplifier: g [23] in three segments (a gap, a one-entry segment), an MLP
  // 1 -> 4 -> 1. The last bias is a constant: softmax ignores a shift of every score, so its true
  // gradient is 0, where a relative error against finite-difference noise means nothing.
  add_case(
      "neural_amplify",
      [](Rng& r) {
        return TensorList{random(r, {23}, DType::f64, -0.5, 0.5), random(r, {4, 1}, DType::f64, -1.5, 1.5),
                          random(r, {4}, DType::f64, -1.5, 1.5), random(r, {1, 4}, DType::f64, -0.75, 0.75)};
      },
      [](const TensorList& x) {
        const Tensor last_bias = Tensor::full({1}, 0.3, x[0].dtype(), x[0].device());
        return neural_amplify(x[0], {x[1], x[2], x[3], last_bias}, {{0, 9}, {12, 1}, {14, 9}}, 0.7);
      },
      {}, "neural_amplify");

  // ---- views
  add_case("reshape", [](Rng& r) { return TensorList{random(r, {3, 4})}; },
           [](const TensorList& x) { return reshape(x[0], {2, -1, 3}); });
  add_case("transpose", [](Rng& r) { return TensorList{random(r, {2, 3, 4})}; },
           [](const TensorList& x) { return transpose(x[0], 0, 2); });
  add_case("slice", [](Rng& r) { return TensorList{random(r, {3, 7})}; },
           [](const TensorList& x) { return slice(x[0], 1, 2, 4); });
  add_case("concat", [](Rng& r) { return TensorList{random(r, {2, 3}), random(r, {2, 1}), random(r, {2, 4})}; },
           [](const TensorList& x) { return concat({x[0], x[1], x[2]}, 1); });
  add_case("contiguous of transpose", [](Rng& r) { return TensorList{random(r, {3, 5})}; },
           [](const TensorList& x) { return contiguous(transpose(x[0], 0, 1)); });

  // ---- a small composite network: embedding -> layernorm -> attention -> MLP -> loss
  add_case(
      "composite network",
      [](Rng& r) {
        return TensorList{random_ids(r, {3, 4}, 7), random(r, {7, 8}), random(r, {8}, DType::f64, 0.5, 1.5),
                          random(r, {8}),           random(r, {24, 8}), random(r, {24}), random(r, {16, 8}),
                          random(r, {16}),          random(r, {7, 16}), random_ids(r, {3}, 7)};
      },
      [](const TensorList& x) {
        Tensor h = embedding(x[0], x[1]);                           // [3, 4, 8]
        Tensor n = layernorm(h, x[2], x[3]);
        Tensor a = add(n, causal_self_attention(linear(n, x[4], x[5]), 2));
        Tensor m = gelu(linear(a, x[6], x[7]));                     // [3, 4, 16]
        Tensor last = reshape(slice(m, 1, 3, 1), {3, 16});           // the answer position
        return cross_entropy(linear(last, x[8]), x[9]);
      },
      {"embedding", "layernorm", "add", "causal_self_attention", "linear", "gelu", "slice", "reshape", "cross_entropy"});
  return c;
}

std::vector<ForwardCase> build_forward() {
  std::vector<ForwardCase> c;
  // sign(0) = sign(-0) = 0.
  c.push_back({"sign with zeros", {"sign"},
               [](Rng& r) {
                 Tensor x = random(r, {3, 5}, DType::f64, -2, 2);
                 x.data<double>()[4] = 0.0;
                 x.data<double>()[9] = -0.0;
                 return TensorList{x};
               },
               [](const TensorList& x) { return sign(x[0]); },
               [](const std::vector<std::vector<double>>& x) {
                 std::vector<double> out;
                 for (double v : x[0]) out.push_back(v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0);
                 return out;
               }});
  // argmax: the first maximum of each row; rows with ties, and rows longer than a warp.
  c.push_back({"argmax with ties", {"argmax"},
               [](Rng& r) {
                 Tensor x = random(r, {5, 37}, DType::f64, -2, 2);
                 double* d = x.data<double>();
                 d[0 * 37 + 3] = d[0 * 37 + 20] = 5.0;
                 d[2 * 37 + 36] = d[2 * 37 + 35] = 7.0;
                 return TensorList{x};
               },
               [](const TensorList& x) { return argmax(x[0]); },
               [](const std::vector<std::vector<double>>& x) {
                 std::vector<double> out;
                 for (std::size_t row = 0; row < 5; ++row) {
                   std::size_t best = 0;
                   for (std::size_t j = 1; j < 37; ++j) best = x[0][row * 37 + j] > x[0][row * 37 + best] ? j : best;
                   out.push_back(static_cast<double>(best));
                 }
                 return out;
               }});
  c.push_back({"count_equal", {"count_equal"},
               [](Rng& r) { return TensorList{random_ids(r, {41}, 3), random_ids(r, {41}, 3)}; },
               [](const TensorList& x) { return count_equal(x[0], x[1]); },
               [](const std::vector<std::vector<double>>& x) {
                 double n = 0;
                 for (std::size_t i = 0; i < x[0].size(); ++i) n += x[0][i] == x[1][i] ? 1 : 0;
                 return std::vector<double>{n};
               }});
  // add_ writes into its first argument (a copy here, so the case can run twice).
  c.push_back({"add_ in place", {"add_"},
               [](Rng& r) { return TensorList{random(r, {4, 9}), random(r, {4, 9})}; },
               [](const TensorList& x) {
                 Tensor a = x[0].clone();
                 add_(a, x[1]);
                 return a;
               },
               [](const std::vector<std::vector<double>>& x) {
                 std::vector<double> out;
                 for (std::size_t i = 0; i < x[0].size(); ++i) out.push_back(x[0][i] + x[1][i]);
                 return out;
               }});
  return c;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build();
  return cases;
}

const std::vector<ForwardCase>& forward_cases() {
  static const std::vector<ForwardCase> cases = build_forward();
  return cases;
}

const std::vector<OpCase>& model_size_cases() {
  static const std::vector<OpCase> cases = {
      {"layernorm [2560,128]",
       [](Rng& r) { return TensorList{random(r, {512, 5, 128}), random(r, {128}), random(r, {128})}; },
       [](const TensorList& x) { return layernorm(x[0], x[1], x[2]); }},
      // LayerNorm's recorded backward, whose gradients are LayerNorm's second derivatives.
      {"layernorm backward [2560,128]",
       [](Rng& r) { return TensorList{random(r, {512, 5, 128}), random(r, {512, 5, 128}), random(r, {128})}; },
       [](const TensorList& x) {
         const LayerNormGrads d = layernorm_backward(x[0], x[1], x[2]);
         return add(add(d.dx, mul(d.dgamma, d.dgamma)), scale(d.dbeta, 0.5));
       }},
      {"attention [512,5,384] 4 heads", [](Rng& r) { return TensorList{random(r, {512, 5, 384})}; },
       [](const TensorList& x) { return causal_self_attention(x[0], 4); }},
      {"attention [4,64,384] 4 heads", [](Rng& r) { return TensorList{random(r, {4, 64, 384})}; },
       [](const TensorList& x) { return causal_self_attention(x[0], 4); }},
      {"attention [2,100,192] 2 heads", [](Rng& r) { return TensorList{random(r, {2, 100, 192})}; },
       [](const TensorList& x) { return causal_self_attention(x[0], 2); }},
      // Heads of 128 and more: the long-sequence backward's key kernel runs 128 threads, not a warp multiple of d.
      {"attention [1,100,768] 2 heads of 128", [](Rng& r) { return TensorList{random(r, {1, 100, 768})}; },
       [](const TensorList& x) { return causal_self_attention(x[0], 2); }},
      // Attention's recorded backward, whose gradients are attention's second derivatives.
      {"attention backward [512,5,384] 4 heads",
       [](Rng& r) { return TensorList{random(r, {512, 5, 128}), random(r, {512, 5, 384})}; },
       [](const TensorList& x) { return causal_self_attention_backward(x[0], x[1], 4); }},
      {"attention backward [2,100,192] 2 heads",
       [](Rng& r) { return TensorList{random(r, {2, 100, 64}), random(r, {2, 100, 192})}; },
       [](const TensorList& x) { return causal_self_attention_backward(x[0], x[1], 2); }},
      {"cross_entropy [512,99]", [](Rng& r) { return TensorList{random(r, {512, 99}, DType::f64, -3, 3), random_ids(r, {512}, 99)}; },
       [](const TensorList& x) { return cross_entropy(x[0], x[1]); }},
      {"stablemax_cross_entropy [512,99]",
       [](Rng& r) { return TensorList{random(r, {512, 99}, DType::f64, -3, 3), random_ids(r, {512}, 99)}; },
       [](const TensorList& x) { return stablemax_cross_entropy(x[0], x[1]); }},
      {"embedding [512,5] into [99,128]", [](Rng& r) { return TensorList{random_ids(r, {512, 5}, 99), random(r, {99, 128})}; },
       [](const TensorList& x) { return embedding(x[0], x[1]); }},
      {"linear [2560,128] -> 512 + gelu", [](Rng& r) { return TensorList{random(r, {512, 5, 128}), random(r, {512, 128}), random(r, {512})}; },
       [](const TensorList& x) { return gelu(linear(x[0], x[1], x[2])); }},
      {"add_layernorm [2560,128]",
       [](Rng& r) {
         return TensorList{random(r, {512, 5, 128}), random(r, {512, 5, 128}), random(r, {128}), random(r, {128})};
       },
       [](const TensorList& x) {
         const AddLayerNorm o = add_layernorm(x[0], x[1], x[2], x[3]);
         return add(scale(o.sum, 0.5), o.normed);
       }},
      {"linear [2560,128] -> 512 + bias_gelu", [](Rng& r) { return TensorList{random(r, {512, 5, 128}), random(r, {512, 128}), random(r, {512})}; },
       [](const TensorList& x) { return bias_gelu(linear(x[0], x[1]), x[2]); }},
      // reduce_dim: few long columns are split over blocks by rows (a bias gradient), or not.
      {"sum over rows [2560,512]", [](Rng& r) { return TensorList{random(r, {2560, 512})}; },
       [](const TensorList& x) { return sum(x[0], 0); }},
      {"sum dim 1 of [3,1000,7]", [](Rng& r) { return TensorList{random(r, {3, 1000, 7})}; },
       [](const TensorList& x) { return sum(x[0], 1); }},
      {"sum last dim of [100,300]", [](Rng& r) { return TensorList{random(r, {100, 300})}; },
       [](const TensorList& x) { return sum(x[0], 1); }},
      {"sum dim 1 of [3,100,7]", [](Rng& r) { return TensorList{random(r, {3, 100, 7})}; },
       [](const TensorList& x) { return sum(x[0], 1); }},
      {"sum over 420k", [](Rng& r) { return TensorList{random(r, {420000})}; },
       [](const TensorList& x) { return sum(x[0]); }},
      {"l2_norm over 420k", [](Rng& r) { return TensorList{random(r, {420000})}; },
       [](const TensorList& x) { return l2_norm(x[0]); }},
  };
  return cases;
}

CaseRun run_case(const OpCase& op, const TensorList& inputs_f64, Device device, DType dtype) {
  tape().clear();
  TensorList xs;
  for (const Tensor& t : inputs_f64) {
    Tensor x = is_floating(t.dtype()) ? t.to(dtype).to(device) : t.to(device);
    if (is_floating(x.dtype())) x = x.clone().set_requires_grad(true);
    xs.push_back(x);
  }
  CaseRun run;
  run.output = op.fn(xs);
  Rng rng(99);
  Tensor w = random(rng, run.output.shape(), dtype).to(device);
  TensorList wrt;
  for (const Tensor& x : xs) {
    if (is_floating(x.dtype())) wrt.push_back(x);
  }
  run.grads = grad({sum(mul(run.output, w))}, wrt);
  tape().clear();
  return run;
}

void check_float32_against_float64(const OpCase& op, std::uint64_t seed, Device device, double tolerance) {
  Rng rng(seed);
  const TensorList inputs = op.inputs(rng);
  const CaseRun ref = run_case(op, inputs, Device::cpu(), DType::f64);
  const CaseRun f32 = run_case(op, inputs, device, DType::f32);
  CHECK(f32.output.device() == device);
  CHECK(f32.output.dtype() == DType::f32);
  const double out_err = rel_error(f32.output, ref.output);
  INFO(op.name << ": forward relative error " << out_err);
  CHECK(out_err < tolerance);
  REQUIRE(f32.grads.size() == ref.grads.size());
  for (std::size_t k = 0; k < ref.grads.size(); ++k) {
    const double err = rel_error(f32.grads[k], ref.grads[k]);
    INFO(op.name << ": gradient " << k << " relative error " << err);
    CHECK(err < tolerance);
  }
}

}  // namespace tgtest

// The Transformer: PyTorch state-dict names and shapes, parameter count, and the whole model's
// gradient (both block variants) against float64 finite differences.
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <tuple>

#include "models/transformer.h"
#include "support.h"

using namespace tg;
using namespace tgtest;

TEST_CASE("parameter names and shapes are the reference model's state dict", "[model]") {
  Transformer m(TransformerConfig{});
  const auto specs = m.parameter_specs();
  REQUIRE(specs.size() == 2 + 12 * 2 + 3);
  CHECK(specs[0].name == "token_embeddings.weight");
  CHECK(specs[0].shape == Shape{99, 128});
  CHECK(specs[1].name == "position_embeddings.weight");
  CHECK(specs[6].name == "layers.0.attn.in_proj_weight");
  CHECK(specs[6].shape == Shape{384, 128});
  CHECK(specs[10].name == "layers.0.mlp.0.weight");
  CHECK(specs[10].shape == Shape{512, 128});
  CHECK(specs[12].name == "layers.0.mlp.2.weight");
  CHECK(specs[12].shape == Shape{128, 512});
  CHECK(specs.back().name == "head.weight");
  ParameterTable t(specs, DType::f32, Device::cpu());
  CHECK(t.numel() == 422656);  // ~0.42M, the size the NeuralGrok paper gives
}

TEST_CASE("initialisation follows PyTorch's per-layer defaults", "[model]") {
  Transformer m(TransformerConfig{});
  ParameterTable t(m.parameter_specs(), DType::f64, Device::cpu());
  Rng rng(0);
  m.initialize(t, rng);
  auto stats = [](const Tensor& x) {
    const auto v = values(x);
    double mean = 0, sq = 0, max = 0;
    for (double a : v) {
      mean += a / v.size();
      sq += a * a / v.size();
      max = std::max(max, std::abs(a));
    }
    return std::tuple{mean, std::sqrt(sq - mean * mean), max};
  };
  auto [emb_mean, emb_std, emb_max] = stats(t.at("token_embeddings.weight"));
  CHECK(std::abs(emb_mean) < 0.03);
  CHECK(std::abs(emb_std - 1.0) < 0.03);  // N(0, 1)
  CHECK(values(t.at("layers.0.ln_1.weight")) == std::vector<double>(128, 1.0));
  CHECK(values(t.at("layers.1.attn.in_proj_bias")) == std::vector<double>(384, 0.0));
  CHECK(values(t.at("layers.1.attn.out_proj.bias")) == std::vector<double>(128, 0.0));
  auto [w_mean, w_std, w_max] = stats(t.at("layers.0.attn.in_proj_weight"));
  CHECK(w_max <= std::sqrt(6.0 / 512));  // xavier_uniform over (3d, d)
  CHECK(std::abs(w_std - std::sqrt(6.0 / 512) / std::sqrt(3.0)) < 0.005);
  auto [m_mean, m_std, m_max] = stats(t.at("layers.0.mlp.2.bias"));
  CHECK(m_max <= 1.0 / std::sqrt(512.0));  // fan_in of mlp.2 is 4d
  CHECK(m_max > 0.8 / std::sqrt(512.0));
}

TEST_CASE("the whole model's loss gradient matches finite differences (both blocks)", "[model][gradcheck]") {
  for (const char* block : {"reference", "prenorm"}) {
    CAPTURE(block);
    TransformerConfig c;
    c.vocab = 7;
    c.seq_len = 4;
    c.width = 8;
    c.heads = 2;
    c.layers = 2;
    c.block = parse_block_variant(block);
    Transformer m(c);
    ParameterTable t(m.parameter_specs(), DType::f64, Device::cpu());
    Rng rng(4);
    m.initialize(t, rng);
    Tensor ids = random_ids(rng, {5, 4}, 7), targets = random_ids(rng, {5}, 7);
    TensorList inputs;
    for (const Tensor& p : t.values()) inputs.push_back(p.detach().clone());
    const GradCheckResult r = gradcheck(
        [&](const TensorList& ps) { return cross_entropy(m.forward(ps, ids), targets); }, inputs);
    INFO("worst: " << r.worst << " relative error " << r.max_rel_error);
    CHECK(r.max_rel_error < 1e-6);
  }
}

TEST_CASE("the two block variants compute different functions", "[model]") {
  TransformerConfig c;
  c.vocab = 11;
  c.width = 16;
  c.heads = 2;
  Transformer ref(c);
  c.block = BlockVariant::prenorm;
  Transformer pre(c);
  ParameterTable t(ref.parameter_specs(), DType::f64, Device::cpu());
  Rng rng(5);
  ref.initialize(t, rng);
  Tensor ids = random_ids(rng, {3, 4}, 11);
  CHECK(rel_error(ref.forward(t.values(), ids), pre.forward(t.values(), ids)) > 1e-3);
}

// The last layer runs its out-projection, ln_2 and MLP on the answer position alone (the capturing pass
// keeps every position, as the model did before): each remaining row is computed exactly as in the full
// pass, so the logits agree bit for bit; parameter gradients agree to rounding (the weight gradients sum
// over 1 instead of S positions per example, the other S - 1 contributing exact zeros).
TEST_CASE("the answer-position-only last layer gives the full pass's logits bit for bit", "[model]") {
  struct Case {
    const char* block;
    std::int64_t batch, seq, width, heads, layers;
    DType dtype;
  };
  for (const Case& k : {Case{"reference", 512, 4, 128, 4, 2, DType::f32}, Case{"prenorm", 512, 4, 128, 4, 2, DType::f32},
                        Case{"reference", 7, 5, 24, 3, 3, DType::f32}, Case{"prenorm", 9, 3, 12, 2, 1, DType::f64}}) {
    CAPTURE(k.block, k.batch, k.seq, k.width, k.heads, k.layers);
    TransformerConfig c;
    c.vocab = 23;
    c.seq_len = k.seq;
    c.width = k.width;
    c.heads = k.heads;
    c.layers = k.layers;
    c.block = parse_block_variant(k.block);
    Transformer m(c);
    ParameterTable t(m.parameter_specs(), k.dtype, Device::cpu());
    Rng rng(21);
    m.initialize(t, rng);
    const Tensor ids = random_ids(rng, {k.batch, k.seq}, c.vocab), targets = random_ids(rng, {k.batch}, c.vocab);
    Transformer::Activations full_pass;  // capturing forces every position through every layer
    const Tensor pruned = m.forward(t.values(), ids), full = m.forward(t.values(), ids, &full_pass);
    REQUIRE(full_pass.mlp_hidden.back().shape() == Shape{k.batch, k.seq, 4 * k.width});
    CHECK(values(pruned) == values(full));
    const TensorList g_pruned = grad({cross_entropy(pruned, targets)}, t.values());
    const TensorList g_full = grad({cross_entropy(full, targets)}, t.values());
    for (std::size_t i = 0; i < g_full.size(); ++i) {
      CAPTURE(t.name(i));
      CHECK(rel_error(g_pruned[i], g_full[i]) < (k.dtype == DType::f32 ? 1e-5 : 1e-13));
    }
  }
}

// GrokTransfer: the FNN, the factorised token embedding (both models), the general weight-loading pass,
// the embedding transfer from a weak checkpoint with its error cases, frozen parameters, and a small
// end-to-end transfer run whose target generalises.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "engine/safetensors.h"
#include "experiments/cli/transfer_command.h"
#include "experiments/training/model_factory.h"
#include "experiments/training/trainer.h"
#include "experiments/training/weight_loading.h"
#include "models/fnn.h"
#include "models/token_embedding.h"
#include "models/transformer.h"
#include "run_support.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

TensorList detached(const ParameterTable& t) {
  TensorList out;
  for (const Tensor& p : t.values()) out.push_back(p.detach().clone());
  return out;
}

// A weak FNN on the pair layout of (a+b) mod 13, trained a few steps; returns its checkpoint's path.
TrainConfig weak_config(const std::string& run_dir, std::int64_t modulus = 13) {
  TrainConfig c;
  c.task = "a+b";
  c.modulus = modulus;
  c.layout = "pair";
  c.train_fraction = 0.5;
  c.model = "fnn";
  c.layers = 2;
  c.width = 16;
  c.embed_dim = 4;
  c.optimizer = "adamw";
  c.lr = 1e-2;
  c.batch_size = 1024;
  c.max_steps = 5;
  c.warmup_steps = 0;
  c.device = "cpu";
  c.run_dir = run_dir;
  c.progress = false;
  return c;
}

std::string train_weak(const std::string& run_dir, std::int64_t modulus = 13) {
  Trainer weak(weak_config(run_dir, modulus));
  weak.run();
  return run_dir + "/checkpoint.safetensors";
}

TrainConfig target_config(const std::string& run_dir, const std::string& weak_checkpoint, std::int64_t modulus = 13) {
  TrainConfig c = weak_config(run_dir, modulus);
  c.layers = 3;
  c.width = 32;
  c.embed_dim = 16;
  c.embedding_rank = 4;
  c.init_embedding_from = weak_checkpoint;
  c.transfer_init_scale = 0.3;
  c.weight_decay = 1.0;
  return c;
}

std::vector<double> param(const Trainer& t, const std::string& name) { return values(t.params().at(name)); }

}  // namespace

// ---------------------------------------------------------------- models

TEST_CASE("fnn: parameter names, shapes and the meaning of L layers", "[groktransfer][model]") {
  FnnConfig c;  // the weak model: L = 2, e = 4, width 16
  c.vocab = 113;
  Fnn weak(c);
  auto s = weak.parameter_specs();
  REQUIRE(s.size() == 3);
  CHECK(s[0].name == "token_embeddings.weight");
  CHECK(s[0].shape == Shape{113, 4});
  CHECK(s[1].name == "layers.0.weight");
  CHECK(s[1].shape == Shape{16, 8});
  CHECK(s[2].name == "head.weight");
  CHECK(s[2].shape == Shape{113, 16});

  c.layers = 3;  // the FNN target: 256 -> 512 -> 512 -> V, no biases
  c.embed_dim = 128;
  c.width = 512;
  s = Fnn(c).parameter_specs();
  REQUIRE(s.size() == 4);
  CHECK(s[1].shape == Shape{512, 256});
  CHECK(s[2].name == "layers.1.weight");
  CHECK(s[2].shape == Shape{512, 512});
  CHECK(s[3].shape == Shape{113, 512});

  c.bias = true;
  c.embedding_rank = 4;
  s = Fnn(c).parameter_specs();
  REQUIRE(s.size() == 7);
  CHECK(s[0].name == "token_embeddings.A");
  CHECK(s[0].shape == Shape{113, 4});
  CHECK(s[1].name == "token_embeddings.B");
  CHECK(s[1].shape == Shape{4, 128});
  CHECK(s[3].name == "layers.0.bias");
  CHECK(s[3].shape == Shape{512});
  CHECK(s[6].name == "head.weight");  // the output layer has no bias

  c.layers = 1;  // a linear model on the concatenated embeddings
  c.bias = false;
  c.embedding_rank = 0;
  s = Fnn(c).parameter_specs();
  REQUIRE(s.size() == 2);
  CHECK(s[1].shape == Shape{113, 256});
  c.layers = 0;
  CHECK_THROWS_WITH(Fnn(c), ContainsSubstring("layers must be at least 1"));
}

TEST_CASE("fnn: PyTorch default initialisation", "[groktransfer][model]") {
  FnnConfig c;
  c.vocab = 50;
  c.embed_dim = 40;
  c.width = 64;
  c.layers = 3;
  c.bias = true;
  Fnn m(c);
  ParameterTable t(m.parameter_specs(), DType::f64, Device::cpu());
  Rng rng(1);
  m.initialize(t, rng);
  auto max_abs = [](const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
  };
  auto std_of = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  CHECK(std::abs(std_of(values(t.at("token_embeddings.weight"))) - 1.0) < 0.05);  // N(0, 1)
  const double b0 = 1.0 / std::sqrt(80.0), b1 = 1.0 / std::sqrt(64.0);
  CHECK(max_abs(values(t.at("layers.0.weight"))) <= b0);
  CHECK(max_abs(values(t.at("layers.0.weight"))) > 0.95 * b0);
  CHECK(max_abs(values(t.at("layers.0.bias"))) <= b0);  // the bias uses its weight's fan_in
  CHECK(max_abs(values(t.at("layers.1.bias"))) <= b1);
  CHECK(max_abs(values(t.at("head.weight"))) <= b1);
  CHECK(max_abs(values(t.at("head.weight"))) > 0.95 * b1);
}

TEST_CASE("fnn: the loss gradient matches finite differences", "[groktransfer][model][gradcheck]") {
  for (bool bias : {false, true}) {
    for (std::int64_t rank : {0, 3}) {
      CAPTURE(bias, rank);
      FnnConfig c;
      c.vocab = 7;
      c.seq_len = 2;
      c.embed_dim = 5;
      c.width = 6;
      c.layers = 3;
      c.bias = bias;
      c.embedding_rank = rank;
      Fnn m(c);
      ParameterTable t(m.parameter_specs(), DType::f64, Device::cpu());
      Rng rng(3);
      m.initialize(t, rng);
      Tensor ids = random_ids(rng, {6, 2}, 7), targets = random_ids(rng, {6}, 7);
      const GradCheckResult r = gradcheck(
          [&](const TensorList& ps) { return cross_entropy(m.forward(ps, ids), targets); }, detached(t));
      INFO("worst: " << r.worst << " relative error " << r.max_rel_error);
      CHECK(r.max_rel_error < 1e-6);
    }
  }
}

TEST_CASE("factorised embedding: forward is embedding(ids, A B); A and B both get the right gradients",
          "[groktransfer][gradcheck]") {
  Rng rng(5);
  const Tensor a = random(rng, {9, 3}), b = random(rng, {3, 6});
  const Tensor ids = random_ids(rng, {4, 2}, 9);
  // forward against a naive reference
  const Tensor out = embedding(ids, token_embedding_table({a, b}, 0, 3));
  const auto av = values(a), bv = values(b), ov = values(out);
  const auto iv = ids.to_vector<std::int32_t>();
  double worst = 0;
  for (std::size_t n = 0; n < iv.size(); ++n) {
    for (std::size_t j = 0; j < 6; ++j) {
      double ref = 0;
      for (std::size_t k = 0; k < 3; ++k) ref += av[iv[n] * 3 + k] * bv[k * 6 + j];
      worst = std::max(worst, std::abs(ov[n * 6 + j] - ref));
    }
  }
  CHECK(worst < 1e-12);
  // backward against finite differences, both factors
  const GradCheckResult r =
      gradcheck([&](const TensorList& x) { return embedding(ids, token_embedding_table(x, 0, 3)); }, {a, b});
  INFO("worst: " << r.worst << " relative error " << r.max_rel_error);
  CHECK(r.max_rel_error < 1e-7);
  // both gradients are nonzero
  Tensor la = a.clone(), lb = b.clone();
  la.set_requires_grad(true);
  lb.set_requires_grad(true);
  tape().clear();
  const TensorList g = grad({sum(square(embedding(ids, token_embedding_table({la, lb}, 0, 3))))}, {la, lb});
  tape().clear();
  CHECK(l2_norm(g[0]).item() > 1e-3);
  CHECK(l2_norm(g[1]).item() > 1e-3);
}

TEST_CASE("factorised embedding in the Transformer: names, same function as the product table, gradcheck",
          "[groktransfer][model][gradcheck]") {
  TransformerConfig c;
  c.vocab = 7;
  c.seq_len = 2;
  c.width = 8;
  c.heads = 2;
  c.layers = 1;
  Transformer plain(c);
  c.embedding_rank = 3;
  Transformer fact(c);
  const auto specs = fact.parameter_specs();
  REQUIRE(specs.size() == plain.parameter_specs().size() + 1);
  CHECK(specs[0].name == "token_embeddings.A");
  CHECK(specs[0].shape == Shape{7, 3});
  CHECK(specs[1].name == "token_embeddings.B");
  CHECK(specs[1].shape == Shape{3, 8});
  CHECK(specs[2].name == "position_embeddings.weight");

  ParameterTable tf(specs, DType::f64, Device::cpu());
  Rng rng(8);
  fact.initialize(tf, rng);
  // B follows nn.Linear(r, d): U(-1/sqrt(r), 1/sqrt(r)).
  for (double v : values(tf.at("token_embeddings.B"))) CHECK(std::abs(v) <= 1.0 / std::sqrt(3.0));
  // The plain model with token_embeddings.weight = A B computes the same logits.
  ParameterTable tp(plain.parameter_specs(), DType::f64, Device::cpu());
  {
    NoGradGuard no_grad;
    Tensor w = tp.at("token_embeddings.weight");
    w.copy_from_(matmul(tf.at("token_embeddings.A"), tf.at("token_embeddings.B")));
    for (std::size_t i = 1; i < tp.size(); ++i) {
      Tensor dst = tp[i];
      dst.copy_from_(tf[i + 1]);
    }
  }
  const Tensor ids = random_ids(rng, {5, 2}, 7), targets = random_ids(rng, {5}, 7);
  CHECK(rel_error(fact.forward(tf.values(), ids), plain.forward(tp.values(), ids)) < 1e-12);

  const GradCheckResult r = gradcheck(
      [&](const TensorList& ps) { return cross_entropy(fact.forward(ps, ids), targets); }, detached(tf));
  INFO("worst: " << r.worst << " relative error " << r.max_rel_error);
  CHECK(r.max_rel_error < 1e-6);
}

TEST_CASE("make_model builds the configured model", "[groktransfer]") {
  TrainConfig c;
  c.model = "fnn";
  c.layers = 2;
  c.width = 16;
  c.embed_dim = 4;
  auto m = make_model(c, 113, 2);
  CHECK(std::string(m->name()) == "fnn");
  CHECK(m->parameter_specs()[0].shape == Shape{113, 4});
  c.embed_dim = 0;  // the width
  CHECK(make_model(c, 113, 2)->parameter_specs()[0].shape == Shape{113, 16});
  c.model = "transformer";
  c.width = 16;
  c.heads = 2;
  c.embedding_rank = 4;
  m = make_model(c, 113, 2);
  CHECK(std::string(m->name()) == "transformer");
  CHECK(m->parameter_specs()[1].name == "token_embeddings.B");
  c.embed_dim = 8;
  CHECK_THROWS_WITH(make_model(c, 113, 2), ContainsSubstring("--embed-dim 8 is an fnn setting"));
}

// ---------------------------------------------------------------- the general weight-loading pass

TEST_CASE("load_weights: all, selected and renamed tensors; every mismatch is an error that changes nothing",
          "[groktransfer][weights]") {
  const std::string dir = fresh_temp_dir("load_weights");
  FnnConfig c;
  c.vocab = 11;
  c.bias = true;
  Fnn m(c);
  ParameterTable src(m.parameter_specs(), DType::f32, Device::cpu()), dst(m.parameter_specs(), DType::f32, Device::cpu());
  Rng rng(2);
  m.initialize(src, rng);
  m.initialize(dst, rng);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < src.size(); ++i) tensors.emplace_back(src.name(i), src[i]);
  tensors.emplace_back("renamed.embedding", src.at("token_embeddings.weight"));
  tensors.emplace_back("as_f64", src.at("head.weight").to(DType::f64));
  tensors.emplace_back("wrong_shape", Tensor::zeros({3, 3}, DType::f32));
  tensors.emplace_back("ids", Tensor::zeros({11, 4}, DType::i32));
  const std::string path = dir + "/w.safetensors";
  save_safetensors(path, tensors);
  const SafetensorsFile file = load_safetensors(path);

  const std::vector<double> before = values(dst.flat_values());
  auto fails = [&](const WeightPlan& plan, const std::string& message, WeightLoadOptions o = {}) {
    CHECK_THROWS_WITH(load_weights(file, dst, plan, o), ContainsSubstring(message) && ContainsSubstring(path));
    CHECK(values(dst.flat_values()) == before);  // validated before anything changed
  };
  // a failing entry among good ones changes nothing
  WeightPlan mixed = all_parameters(dst);
  mixed["head.weight"] = "wrong_shape";
  fails(mixed, "tensor 'wrong_shape' has shape [3, 3] but parameter 'head.weight' needs [11, 16]");
  fails({{"no.such.param", "head.weight"}}, "the model has no parameter 'no.such.param'");
  fails({{"head.weight", "missing.tensor"}}, "tensor 'missing.tensor' is missing but parameter 'head.weight' needs");
  fails({{"head.weight", "as_f64"}}, "has dtype f64 but parameter 'head.weight' is f32");
  fails({{"token_embeddings.weight", "ids"}}, "tensor 'ids' is [11, 4] i32");
  fails({}, "nothing to load");

  // selected
  auto loaded = load_weights(file, dst, selected_parameters({"layers.0.bias"}));
  CHECK(loaded == std::vector<std::string>{"layers.0.bias"});
  CHECK(values(dst.at("layers.0.bias")) == values(src.at("layers.0.bias")));
  CHECK(values(dst.at("head.weight")) != values(src.at("head.weight")));
  // renamed, and with dtype conversion
  load_weights(file, dst, parse_weight_plan("token_embeddings.weight=renamed.embedding,head.weight=as_f64"),
               {.convert_dtype = true});
  CHECK(values(dst.at("token_embeddings.weight")) == values(src.at("token_embeddings.weight")));
  CHECK(values(dst.at("head.weight")) == values(src.at("head.weight")));
  // all
  loaded = load_weights(path, dst, all_parameters(dst));
  CHECK(loaded.size() == dst.size());
  CHECK(values(dst.flat_values()) == values(src.flat_values()));

  CHECK(parse_weight_plan("a,b=c") == WeightPlan{{"a", "a"}, {"b", "c"}});
  CHECK_THROWS_WITH(parse_weight_plan("a=b=c"), ContainsSubstring("must be 'parameter' or 'parameter=tensor'"));
  CHECK_THROWS_WITH(parse_weight_plan("a,,b"), ContainsSubstring("empty entry"));
  CHECK_THROWS_WITH(parse_weight_plan("a,a=b"), ContainsSubstring("appears twice"));
}

// ---------------------------------------------------------------- the embedding transfer

TEST_CASE("transfer: A is the weak embedding exactly, B is drawn at the init scale, seeded",
          "[groktransfer][transfer]") {
  const std::string dir = fresh_temp_dir("transfer");
  const std::string weak_path = train_weak(dir + "/weak");
  const SafetensorsFile weak = load_safetensors(weak_path);
  const std::vector<double> e_w = values(weak.at("token_embeddings.weight"));

  TrainConfig c = target_config(dir + "/target", weak_path);
  c.embed_dim = 400;  // many entries in B for the std
  Trainer t(c);
  CHECK(param(t, "token_embeddings.A") == e_w);  // bit for bit
  const auto b = param(t, "token_embeddings.B");
  double sq = 0, mean = 0;
  for (double v : b) {
    sq += v * v;
    mean += v;
  }
  CHECK(std::abs(std::sqrt(sq / b.size()) - 0.3) < 0.02);
  CHECK(std::abs(mean / b.size()) < 0.02);
  Trainer again(c);  // same seed: same B
  CHECK(param(again, "token_embeddings.B") == b);

  // init scale 0: nn.Linear(d_W, d_T)'s default U(-1/2, 1/2) for d_W = 4
  c.transfer_init_scale = 0.0;
  Trainer def(c);
  double max_abs = 0;
  for (double v : param(def, "token_embeddings.B")) max_abs = std::max(max_abs, std::abs(v));
  CHECK(max_abs <= 0.5);
  CHECK(max_abs > 0.45);
  CHECK(param(def, "token_embeddings.A") == e_w);

  // direct copy: rank 0 and d_T = d_W
  TrainConfig direct = target_config(dir + "/direct", weak_path);
  direct.embedding_rank = 0;
  direct.embed_dim = 4;
  Trainer d(direct);
  CHECK(param(d, "token_embeddings.weight") == e_w);

  // the Transformer target
  TrainConfig tr = target_config(dir + "/transformer", weak_path);
  tr.model = "transformer";
  tr.embed_dim = 0;
  tr.width = 16;
  tr.heads = 2;
  tr.layers = 1;
  Trainer tt(tr);
  CHECK(param(tt, "token_embeddings.A") == e_w);

  // a factorised weak model: E_W = A B of its file
  TrainConfig fw = weak_config(dir + "/weak_fact");
  fw.embedding_rank = 2;
  Trainer weak_fact(fw);
  weak_fact.run();
  TrainConfig from_fact = target_config(dir + "/from_fact", dir + "/weak_fact/checkpoint.safetensors");
  Trainer tf(from_fact);
  const Tensor product = matmul(weak_fact.params().at("token_embeddings.A"), weak_fact.params().at("token_embeddings.B"));
  CHECK(param(tf, "token_embeddings.A") == values(product));
}

TEST_CASE("transfer: every mismatch is a clear error naming the file and the tensor", "[groktransfer][transfer]") {
  const std::string dir = fresh_temp_dir("transfer_errors");
  const std::string weak_path = train_weak(dir + "/weak");
  auto fails = [&](TrainConfig c, const std::string& message) {
    CAPTURE(message);
    CHECK_THROWS_WITH(Trainer(c), ContainsSubstring(message));
  };
  const TrainConfig good = target_config(dir + "/t", weak_path);
  REQUIRE_NOTHROW(Trainer(good));

  TrainConfig c = good;
  c.init_embedding_from = dir + "/nope.safetensors";
  fails(c, "nope.safetensors");

  c = good;  // vocabulary: the weak model learned mod 13, this run is mod 17
  c.modulus = 17;
  fails(c, "has a vocabulary of 13 tokens");
  fails(c, weak_path);

  c = good;  // rank != d_W
  c.embedding_rank = 3;
  fails(c, "has dimension d_W = 4 but this model's factor 'token_embeddings.A' has rank 3: set --embedding-rank 4");

  c = good;  // direct copy with d_T != d_W
  c.embedding_rank = 0;
  fails(c, "a direct copy needs equal dimensions; use the factorised embedding (--embedding-rank 4)");

  c = good;  // dtype
  c.dtype = "f64";
  fails(c, "tensor 'token_embeddings.weight' has dtype f32 but this run's parameters are f64");

  c = good;  // another split of the same task: the weak model has seen the test examples
  c.seed = 3;
  fails(c, "with another split");
  c = good;  // the weak model's split through --split-seed, another initialisation: allowed
  c.seed = good.seed + 3;
  c.split_seed = static_cast<std::int64_t>(good.seed);
  CHECK_NOTHROW(Trainer(c));
  c = good;  // the same run seed but another split seed
  c.split_seed = static_cast<std::int64_t>(good.seed) + 3;
  fails(c, "with another split (split seed");
  c = good;  // another train fraction: the test parts differ too
  c.train_fraction = good.train_fraction * 0.5;
  fails(c, "with another split");

  c = good;  // an outer split (NeuralGrok) carved from the same train part: allowed, the test part is the same
  c.outer_fraction = 0.05;
  CHECK_NOTHROW(Trainer(c));

  c = good;
  c.transfer_init_scale = -1;
  fails(c, "--transfer-init-scale must be >= 0");

  c = good;  // freezing needs something to freeze
  c.init_embedding_from.clear();
  c.embedding_rank = 0;
  c.freeze_embedding_a = true;
  fails(c, "--freeze-embedding-a: the fnn has no factor A to freeze");

  // files without a usable embedding
  const std::string missing = dir + "/missing.safetensors", not2d = dir + "/not2d.safetensors";
  save_safetensors(missing, {{"head.weight", Tensor::zeros({13, 4}, DType::f32)}});
  save_safetensors(not2d, {{"token_embeddings.weight", Tensor::zeros({13, 4, 1}, DType::f32)}});
  c = good;
  c.init_embedding_from = missing;
  fails(c, "tensor 'token_embeddings.weight' is missing");
  fails(c, missing);
  c.init_embedding_from = not2d;
  fails(c, "tensor 'token_embeddings.weight' must be a 2-D embedding table");

  // a model without a token embedding of the expected names
  ParameterTable other({{"w", {13, 4}}}, DType::f32, Device::cpu());
  Rng rng(0);
  CHECK_THROWS_WITH(transfer_embedding(weak_path, other, rng), ContainsSubstring("this model has neither"));
}

// ---------------------------------------------------------------- freezing

TEST_CASE("a frozen A stays bit-identical and its gradient zero under every optimizer", "[groktransfer][freeze]") {
  const std::string dir = fresh_temp_dir("freeze");
  const std::string weak_path = train_weak(dir + "/weak");
  for (const char* optimizer : {"adamw", "adam", "sgd"}) {
    CAPTURE(optimizer);
    TrainConfig c = target_config(dir + "/" + optimizer, weak_path);
    c.optimizer = optimizer;
    c.weight_decay = 0.5;  // decay and momentum would move A even with a zero gradient
    c.freeze_embedding_a = true;
    c.batch_size = 16;
    Trainer t(c);
    const std::size_t a = t.params().index_of("token_embeddings.A");
    CHECK(t.params().frozen(a));
    CHECK_FALSE(t.params().frozen(t.params().index_of("token_embeddings.B")));
    const auto a0 = param(t, "token_embeddings.A");
    const auto b0 = param(t, "token_embeddings.B");
    const auto head0 = param(t, "head.weight");
    for (int i = 0; i < 6; ++i) {
      t.step();
      CHECK(values(t.params()[a].grad()) == std::vector<double>(a0.size(), 0.0));
    }
    CHECK(param(t, "token_embeddings.A") == a0);
    CHECK(param(t, "token_embeddings.B") != b0);
    CHECK(param(t, "head.weight") != head0);
    for (const auto& [name, buffer] : t.optimizer().state()) {  // A's state segment never moved
      CHECK(values(t.params().segment(buffer, a)) == std::vector<double>(a0.size(), 0.0));
    }
  }
  // Unfrozen, the same run moves A.
  TrainConfig c = target_config(dir + "/unfrozen", weak_path);
  Trainer t(c);
  const auto a0 = param(t, "token_embeddings.A");
  t.step();
  t.step();
  CHECK(param(t, "token_embeddings.A") != a0);
}

TEST_CASE("freezing is a property of the table: the optimizer leaves frozen segments exactly unchanged",
          "[groktransfer][freeze]") {
  ParameterTable t({{"a", {3, 5}}, {"b", {7}}}, DType::f32, Device::cpu());
  {
    NoGradGuard no_grad;
    Tensor a = t.at("a"), b = t.at("b");
    a.fill_(1.5);
    b.fill_(-2.0);
    Tensor ga = t.at("a").grad(), gb = t.at("b").grad();
    ga.fill_(0.25);  // even a nonzero gradient (written by hand) must not move a frozen parameter
    gb.fill_(0.5);
  }
  t.set_frozen(0, true);
  CHECK_FALSE(t.at("a").requires_grad());
  CHECK(t.at("b").requires_grad());
  auto adam = make_adam(t, {0.9, 0.98, 1e-8, 0.1, true});
  adam->step(t, 0.1);
  adam->step(t, 0.1);
  CHECK(values(t.at("a")) == std::vector<double>(15, 1.5));
  CHECK(values(t.at("b")) != std::vector<double>(7, -2.0));
  t.set_frozen(0, false);
  CHECK(t.at("a").requires_grad());
  adam->step(t, 0.1);
  CHECK(values(t.at("a")) != std::vector<double>(15, 1.5));
}

// ---------------------------------------------------------------- end to end

TEST_CASE("end to end: a weak model, then a target from its embedding that generalises", "[groktransfer][e2e]") {
  const std::string dir = fresh_temp_dir("e2e");
  TransferRun run;
  run.run_dir = dir;
  run.weak = weak_config("", 59);  // (a+b) mod 59, half the pairs for training
  run.weak.weight_decay = 0.3;
  run.weak.max_steps = 2000;
  run.weak.stop_at_test_acc = 0.9;
  run.weak.eval_every = 20;
  run.target = target_config("", "", 59);
  run.target.width = 64;
  run.target.embed_dim = 32;
  run.target.embedding_rank = 0;  // d_W, read from the weak checkpoint
  run.target.init_embedding_from.clear();
  run.target.max_steps = 300;
  run.target.eval_every = 10;
  run.target.stop_at_test_acc = 0.99;
  const TransferResult r = run_transfer(run);

  INFO(r.to_json().dump(2));
  CHECK(r.weak.last_test_acc >= 0.9);
  CHECK(r.weak.step < 2000);
  CHECK(r.transfer.mode == "factorised");
  CHECK(r.transfer.weak_dim == 4);
  CHECK(r.target.first_test_95 > 0);
  CHECK(r.target.last_test_acc >= 0.99);
  CHECK(r.total_seconds >= r.weak_seconds + r.target_seconds - 1e-6);
  CHECK(fs::exists(dir + "/transfer.json"));
  CHECK(fs::exists(dir + "/weak/checkpoint.safetensors"));
  CHECK(fs::exists(dir + "/target/metrics.jsonl"));
}

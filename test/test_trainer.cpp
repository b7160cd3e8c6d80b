// The trainer: determinism, bit-identical resume, learning on an easy task, and clear errors for bad
// settings and damaged checkpoints (which must leave the run untouched).
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <algorithm>
#include <cmath>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "experiments/methods/neuralgrok.h"
#include "experiments/training/trainer.h"
#include "run_support.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

std::vector<double> flat(const Trainer& t) { return values(t.params().flat_values()); }

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("the same seed gives bit-identical runs; another seed does not", "[trainer][determinism]") {
  const std::string dir = fresh_temp_dir("determinism");
  Trainer a(tiny_run_config(dir + "/a")), b(tiny_run_config(dir + "/b"));
  a.run();
  b.run();
  CHECK(flat(a) == flat(b));
  CHECK(read_file(dir + "/a/metrics.jsonl").size() > 0);
  // Metrics agree except wall time.
  auto strip_time = [](std::string s) {
    std::string out;
    std::istringstream lines(s);
    for (std::string line; std::getline(lines, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("wall_time");
      out += j.dump() + "\n";
    }
    return out;
  };
  CHECK(strip_time(read_file(dir + "/a/metrics.jsonl")) == strip_time(read_file(dir + "/b/metrics.jsonl")));
  TrainConfig other = tiny_run_config(dir + "/c");
  other.seed = 1;
  Trainer c(other);
  c.run();
  CHECK(flat(c) != flat(a));
}

// --split-seed separates the split from the rest: seed 0 with split seed 2 has seed 2's train and test
// examples, and seed 0's initial weights and batch stream; --split-seed S --seed S is the run --seed S.
TEST_CASE("a split seed (--split-seed) varies the split alone", "[trainer][determinism]") {
  const std::string dir = fresh_temp_dir("split_seed");
  auto config = [&](std::uint64_t seed, std::int64_t split_seed, const std::string& name) {
    TrainConfig c = tiny_run_config(dir + "/" + name);
    c.seed = seed;
    c.split_seed = split_seed;
    return c;
  };
  const Trainer seed0(config(0, -1, "seed0")), seed2(config(2, -1, "seed2"));
  const Trainer mixed(config(0, 2, "mixed"));
  REQUIRE(seed0.split().test != seed2.split().test);
  REQUIRE(flat(seed0) != flat(seed2));
  CHECK(mixed.split().train == seed2.split().train);
  CHECK(mixed.split().test == seed2.split().test);
  CHECK(flat(mixed) == flat(seed0));

  Trainer same(config(2, 2, "same")), plain(config(2, -1, "plain"));
  same.run();
  plain.run();
  CHECK(flat(same) == flat(plain));
  CHECK(nlohmann::json::parse(read_file(dir + "/same/config.json")).at("split_seed") == 2);
  // Through the command line too.
  const CliResult cli = run_tapegrok({"train", "--split-seed", "-5", "--run-dir", dir + "/cli"});
  CHECK(cli.code != 0);
  CHECK_THAT(cli.output, ContainsSubstring("--split-seed must be a seed (>= 0) or -1 (the run's --seed), got -5"));

  TrainConfig bad = config(0, -2, "bad");
  CHECK_THROWS_WITH(Trainer(bad), ContainsSubstring("--split-seed must be a seed (>= 0) or -1"));
}

TEST_CASE("resuming from a checkpoint reproduces the uninterrupted run bit for bit", "[trainer][checkpoint]") {
  const std::string dir = fresh_temp_dir("resume");
  struct Variant {
    std::string name, optimizer, method, meta_grad;
  };
  const std::vector<Variant> variants = {{"adam", "adam", "standard", ""},
                                         {"sgd", "sgd", "standard", ""},
                                         {"grokfast-ema", "adam", "grokfast-ema", ""},
                                         {"grokfast-ma", "adam", "grokfast-ma", ""},
                                         {"neuralgrok-lookahead", "adam", "neuralgrok", "lookahead"},
                                         {"neuralgrok-unrolled", "adam", "neuralgrok", "unrolled"}};
  for (const Variant& v : variants) {
    const char* optimizer = v.name.c_str();
    CAPTURE(optimizer);
    TrainConfig full = tiny_run_config(dir + "/full_" + v.name);
    full.optimizer = v.optimizer;
    full.method = v.method;
    full.grokfast_window = 4;
    if (v.method == "neuralgrok") {
      full.outer_fraction = 0.05;
      full.amp_hidden = "8,8";
      full.meta_every = 2;  // the resume point (step 10) is a window boundary
      full.meta_grad = v.meta_grad;
      full.clip_grad_norm = 1.0;
    }
    full.max_steps = 21;  // not a multiple of the epoch length: resume mid-epoch
    Trainer uninterrupted(full);
    uninterrupted.run();

    TrainConfig first = full;
    first.run_dir = dir + "/part_" + v.name;
    first.max_steps = 10;
    Trainer part(first);
    part.run();
    TrainConfig second = first;
    second.max_steps = 21;
    Trainer resumed(second);
    resumed.load_checkpoint(first.run_dir + "/checkpoint.safetensors");
    CHECK(resumed.progress().step == 10);
    resumed.run();
    CHECK(flat(resumed) == flat(uninterrupted));
    CHECK(values(resumed.optimizer().state().begin()->second) ==
          values(uninterrupted.optimizer().state().begin()->second));
    if (v.method == "neuralgrok") {
      CHECK(values(resumed.method<NeuralGrok>()->amp_params().flat_values()) ==
            values(uninterrupted.method<NeuralGrok>()->amp_params().flat_values()));
      CHECK(resumed.method<NeuralGrok>()->meta_steps() == uninterrupted.method<NeuralGrok>()->meta_steps());
    }
  }
}

TEST_CASE("kept checkpoints (--keep-checkpoints): every checkpoint stays, each equal to a run stopped at its step",
          "[trainer][checkpoint]") {
  const std::string dir = fresh_temp_dir("keep_checkpoints");
  TrainConfig kept = tiny_run_config(dir + "/kept");
  kept.max_steps = 20;
  kept.checkpoint_every = 8;
  kept.keep_checkpoints = true;
  Trainer(kept).run();
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(kept.run_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("checkpoint_step", 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"checkpoint_step0000008.safetensors", "checkpoint_step0000016.safetensors",
                                          "checkpoint_step0000020.safetensors"});
  for (const std::int64_t step : {8, 16}) {
    TrainConfig stopped = tiny_run_config(dir + "/stopped" + std::to_string(step));
    stopped.max_steps = step;
    Trainer reference(stopped);
    reference.run();
    TrainConfig reader = kept;
    Trainer loaded(reader, /*restoring=*/true);
    loaded.load_checkpoint(kept.run_dir + "/" + kept_checkpoint_name(step));
    CHECK(loaded.progress().step == step);
    CHECK(flat(loaded) == flat(reference));
  }
}

TEST_CASE("every evaluation logs AGE and AWE, raw and transformed, per tensor and in total", "[trainer][metrics]") {
  TrainConfig c = tiny_run_config(fresh_temp_dir("age"));
  c.method = "neuralgrok";
  c.outer_fraction = 0.05;
  c.amp_hidden = "8,8";
  c.meta_every = 2;
  c.max_steps = 8;
  c.eval_every = 4;
  Trainer t(c);
  t.run();
  std::istringstream lines(read_file(c.run_dir + "/metrics.jsonl"));
  int records = 0;
  for (std::string line; std::getline(lines, line); ++records) {
    const auto j = nlohmann::json::parse(line);
    CHECK(j.at("age_raw").get<double>() > 0);
    CHECK(j.at("age_transformed").get<double>() > 0);
    CHECK(j.at("age_raw").get<double>() != j.at("age_transformed").get<double>());
    CHECK(j.at("awe").get<double>() > 0);
    CHECK(j.at("age_raw_per_tensor").size() == t.params().size());
    CHECK(j.at("meta_steps").get<int>() > 0);
  }
  CHECK(records == 2);
}

// -sum |x| ln |x| over x, in double on the host: the definition, written out.
static double naive_abs_entropy(const std::vector<double>& x) {
  double sum = 0;
  for (double v : x) {
    if (v != 0) sum -= std::abs(v) * std::log(std::abs(v));
  }
  return sum;
}

TEST_CASE("a step's AGE equals -sum |g| ln |g| of its gradient, raw and normalised, per tensor", "[trainer][metrics]") {
  TrainConfig c = tiny_run_config(fresh_temp_dir("age-values"));
  c.dtype = "f64";
  c.batch_size = 4096;     // larger than the training set: the first batch is all of it
  c.grad_normalize = 0.5;  // the transformed gradient is 0.5 g / ||g|| per tensor
  Trainer t(c);
  const StepStats s = t.step(/*with_entropy=*/true);

  // The same gradient from a second, identical run, taken by hand over the whole training set.
  Trainer u(c);
  Tensor ids, targets;
  gather_examples(u.dataset(), u.split().train, Device::cpu(), ids, targets);
  u.params().zero_grad();
  backward(cross_entropy(u.model().forward(u.params().values(), ids), targets));
  tape().clear();
  REQUIRE(s.age_raw.per_tensor.size() == u.params().size());
  REQUIRE(s.age_transformed.per_tensor.size() == u.params().size());
  double raw_total = 0;
  for (std::size_t i = 0; i < u.params().size(); ++i) {
    CAPTURE(u.params().name(i));
    const std::vector<double> g = values(u.params()[i].grad());
    double norm = 0;
    for (double v : g) norm += v * v;
    norm = std::sqrt(norm);
    std::vector<double> normalised;
    for (double v : g) normalised.push_back(0.5 * v / norm);
    // The batch order differs between the runs (a shuffle against the split's order), which moves the
    // mean loss's gradient by rounding only.
    CHECK_THAT(s.age_raw.per_tensor[i], Catch::Matchers::WithinRel(naive_abs_entropy(g), 1e-9));
    CHECK_THAT(s.age_transformed.per_tensor[i], Catch::Matchers::WithinRel(naive_abs_entropy(normalised), 1e-9));
    raw_total += naive_abs_entropy(g);
  }
  CHECK_THAT(s.age_raw.total, Catch::Matchers::WithinRel(raw_total, 1e-9));
}

TEST_CASE("train --loss stablemax trains on the StableMax cross-entropy of the batch, evaluated by hand", "[trainer]") {
  TrainConfig c = tiny_run_config(fresh_temp_dir("stablemax-loss"));
  c.dtype = "f64";
  c.loss = "stablemax";
  c.batch_size = 4096;  // the whole training set
  Trainer t(c);
  const StepStats s = t.step();
  Trainer u(c);  // the same initial weights
  Tensor ids, targets;
  gather_examples(u.dataset(), u.split().train, Device::cpu(), ids, targets);
  const std::vector<double> logits = values(u.model().forward(u.params().values(), ids));
  const std::vector<std::int32_t> wanted = targets.to_vector<std::int32_t>();
  const auto vocab = static_cast<std::size_t>(u.dataset().vocab);
  // s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0); loss = mean of -log(s(x_target) / sum_j s(x_j)).
  auto st = [](double x) { return x >= 0 ? x + 1 : 1 / (1 - x); };
  double loss = 0;
  for (std::size_t n = 0; n < wanted.size(); ++n) {
    double sum = 0;
    for (std::size_t j = 0; j < vocab; ++j) sum += st(logits[n * vocab + j]);
    loss -= std::log(st(logits[n * vocab + static_cast<std::size_t>(wanted[n])]) / sum);
  }
  loss /= static_cast<double>(wanted.size());
  CHECK_THAT(s.loss, Catch::Matchers::WithinRel(loss, 1e-12));
}

TEST_CASE("training learns an easy task", "[trainer]") {
  TrainConfig c = tiny_run_config(fresh_temp_dir("learn"));  // a+b mod 11, lr 3e-3
  c.train_fraction = 0.8;
  c.width = 32;
  c.max_steps = 800;
  c.eval_every = 200;
  c.weight_decay = 0.0;
  Trainer t(c);
  const EvalStats before = t.evaluate(t.split().train);
  t.run();
  const EvalStats after = t.evaluate(t.split().train);
  CHECK(after.loss < 0.5 * before.loss);
  CHECK(after.accuracy > 0.9);
}

TEST_CASE("bad settings are rejected with the setting's name", "[trainer][errors]") {
  const std::string dir = fresh_temp_dir("settings");
  auto rejects = [&](auto change, const std::string& words) {
    TrainConfig c = tiny_run_config(dir);
    change(c);
    CHECK_THROWS_WITH(Trainer(c), ContainsSubstring(words));
  };
  rejects([](TrainConfig& c) { c.optimizer = "rmsprop"; }, "--optimizer 'rmsprop'");
  rejects([](TrainConfig& c) { c.lr = -1; }, "--lr");
  rejects([](TrainConfig& c) { c.batch_size = 0; }, "--batch-size");
  rejects([](TrainConfig& c) { c.device = "tpu"; }, "device 'tpu'");
  rejects([](TrainConfig& c) { c.task = "a^b"; }, "task 'a^b'");
  rejects([](TrainConfig& c) { c.train_fraction = 0; }, "--train-fraction must lie in (0, 1), got 0");
  rejects([](TrainConfig& c) { c.heads = 3; }, "width 16 must be a positive multiple of heads 3");
  rejects([](TrainConfig& c) { c.block = "postnorm"; }, "block variant 'postnorm'");
}

TEST_CASE("damaged or mismatched checkpoints give clear errors and change nothing", "[trainer][checkpoint][errors]") {
  const std::string dir = fresh_temp_dir("damaged");
  TrainConfig c = tiny_run_config(dir + "/run");
  c.max_steps = 8;
  Trainer writer(c);
  writer.run();
  const std::string good = c.run_dir + "/checkpoint.safetensors";
  const std::string bytes = read_file(good);

  Trainer target(c);  // a fresh run the bad files must not modify
  const std::vector<double> before = flat(target);
  auto rejects = [&](const std::string& path, const std::string& words) {
    CHECK_THROWS_WITH(target.load_checkpoint(path), ContainsSubstring(words));
    CHECK(flat(target) == before);
    CHECK(target.progress().step == 0);
  };

  rejects(dir + "/missing.safetensors", "missing.safetensors");
  for (std::size_t cut : {std::size_t{3}, std::size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    write_file(dir + "/truncated.safetensors", bytes.substr(0, cut));
    rejects(dir + "/truncated.safetensors", "truncated.safetensors");
  }
  std::string corrupt = bytes;
  corrupt[12] = '#';  // inside the JSON header
  write_file(dir + "/corrupt.safetensors", corrupt);
  rejects(dir + "/corrupt.safetensors", "corrupt.safetensors");

  // A well-formed file from a different model: the setting that differs is named.
  TrainConfig wider = c;
  wider.width = 32;
  wider.run_dir = dir + "/wider";
  Trainer(wider).save_checkpoint(dir + "/wider.safetensors");
  rejects(dir + "/wider.safetensors", "written with width = 32 but this run has 16");
  // The same settings with one tensor of another shape: the error names the tensor.
  {
    const SafetensorsFile file = load_safetensors(good);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const std::string& name : file.names) {
      tensors.emplace_back(name, name == "token_embeddings.weight" ? Tensor::zeros({3, 4}, DType::f32, Device::cpu()) : file.at(name));
    }
    save_safetensors(dir + "/reshaped.safetensors", tensors, file.metadata);
    rejects(dir + "/reshaped.safetensors", "token_embeddings.weight");
  }
  // Another task or seed: the run's settings disagree.
  TrainConfig seeded = c;
  seeded.seed = 5;
  Trainer(seeded).save_checkpoint(dir + "/seeded.safetensors");
  rejects(dir + "/seeded.safetensors", "seed");
  TrainConfig resplit = c;  // the same run seed, another split
  resplit.split_seed = 5;
  Trainer(resplit).save_checkpoint(dir + "/resplit.safetensors");
  rejects(dir + "/resplit.safetensors", "written with split seed = 5 but this run has 0");
  // A plain safetensors file that is not a run checkpoint.
  save_safetensors(dir + "/plain.safetensors", {{"x", Tensor::zeros({2}, DType::f32)}});
  rejects(dir + "/plain.safetensors", "metadata entry 'format' is missing");
  // The good file still loads.
  CHECK_NOTHROW(target.load_checkpoint(good));
  CHECK(flat(target) == flat(writer));
}

TEST_CASE("a diverging run stops with a message naming the step", "[trainer][errors]") {
  TrainConfig c = tiny_run_config(fresh_temp_dir("diverge"));
  c.lr = 1e30;
  c.optimizer = "sgd";
  c.momentum = 0;
  c.warmup_steps = 0;
  Trainer t(c);
  CHECK_THROWS_WITH(t.run(), ContainsSubstring("training diverged at step"));
}

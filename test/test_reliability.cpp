// Bad input through the CLI and run files: each case gets a clear error naming the setting or the
// file, and loses nothing (docs/reliability.md lists what was tried).
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "run_support.h"

using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> train_args(const std::string& dir, std::vector<std::string> extra) {
  std::vector<std::string> args = {"train"};
  for (const std::string& a : tiny_run_flags(dir)) args.push_back(a);
  for (const std::string& a : extra) args.push_back(a);
  if (std::find(extra.begin(), extra.end(), "--steps") == extra.end()) {
    args.push_back("--steps");
    args.push_back("24");
  }
  return args;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("--config reads its TOML file; flags win; unknown keys, bad values and missing files are errors",
          "[reliability][cli]") {
  const std::string dir = fresh_temp_dir("config_file");
  const std::string toml = dir + "/settings.toml";
  write_text(toml, "seed = 7\nsteps = 8\n[train]\ncheckpoint_every = 4\n");
  const CliResult ok = run_tapegrok(train_args(dir + "/run", {"--config", toml, "--steps", "4"}));
  REQUIRE(ok.code == 0);
  const auto config = nlohmann::json::parse(read_file(dir + "/run/config.json"));
  CHECK(config.at("seed") == 7);              // from the file
  CHECK(config.at("checkpoint_every") == 4);  // from its [train] section
  CHECK(config.at("max_steps") == 4);         // the flag over the file

  const CliResult missing = run_tapegrok(train_args(dir + "/r2", {"--config", dir + "/nope.toml"}));
  CHECK(missing.code != 0);
  CHECK_THAT(missing.output, ContainsSubstring("--config " + dir + "/nope.toml: not a readable file"));
  write_text(toml, "stepz = 3\n");
  const CliResult unknown = run_tapegrok(train_args(dir + "/r3", {"--config", toml}));
  CHECK(unknown.code != 0);
  CHECK_THAT(unknown.output, ContainsSubstring("unknown setting 'stepz'"));
  write_text(toml, "seed = \"many\"\n");
  const CliResult bad = run_tapegrok(train_args(dir + "/r4", {"--config", toml}));
  CHECK(bad.code != 0);
  CHECK_THAT(bad.output, ContainsSubstring("setting 'seed'"));
  CHECK_FALSE(fs::exists(dir + "/r4/metrics.jsonl"));
}

TEST_CASE("numbers that do not fit their setting are refused, not rounded, cut or wrapped", "[reliability][cli]") {
  const std::string dir = fresh_temp_dir("coercion");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--seed", "-1"}, "--seed: '-1' is not an integer"},
      {{"--seed", "18446744073709551616"}, "--seed: '18446744073709551616' is not an integer"},
      {{"--batch-size", "1e20"}, "--batch-size: '1e20' is not an integer"},
      {{"--batch-size", "12abc"}, "--batch-size: '12abc' is not an integer"},
      {{"--modulus", "-5"}, "--modulus must be 0 (the task's default) or in [2, 4096], got -5"},
      {{"--width", "3000000000"}, "--width must lie in [1, 65536], got 3000000000"},
      {{"--train-fraction", "1"}, "--train-fraction must lie in (0, 1)"},
  };
  for (const auto& [flags, message] : cases) {
    CAPTURE(flags);
    std::vector<std::string> args = {"train", "--steps", "0", "--no-progress", "--run-dir", dir + "/run"};
    args.insert(args.end(), flags.begin(), flags.end());
    const CliResult r = run_tapegrok(args);
    CHECK(r.code != 0);
    CHECK_THAT(r.output, ContainsSubstring(message));
    CHECK_FALSE(fs::exists(dir + "/run/metrics.jsonl"));
  }
}

TEST_CASE("a checkpoint's counters must be whole, non-negative integers", "[reliability][checkpoint]") {
  const std::string dir = fresh_temp_dir("counters");
  REQUIRE(run_tapegrok(train_args(dir + "/run", {"--steps", "8"})).code == 0);
  const std::string checkpoint = dir + "/run/checkpoint.safetensors";
  tg::SafetensorsFile file = tg::load_safetensors(checkpoint);
  std::vector<std::pair<std::string, tg::Tensor>> tensors;
  for (const std::string& name : file.names) tensors.emplace_back(name, file.at(name));
  auto resume_with = [&](const std::string& key, const std::string& value) {
    std::map<std::string, std::string> metadata = file.metadata;
    metadata[key] = value;
    const std::string path = dir + "/edited.safetensors";
    tg::save_safetensors(path, tensors, metadata);
    return run_tapegrok(train_args(dir + "/resumed", {"--resume", path, "--steps", "16"}));
  };
  const CliResult cursor = resume_with("sampler.cursor", "12abc");
  CHECK(cursor.code != 0);
  CHECK_THAT(cursor.output, ContainsSubstring("metadata entry 'sampler.cursor' = \"12abc\" is not an integer"));
  nlohmann::json progress = nlohmann::json::parse(file.metadata.at("progress"));
  progress["step"] = -100;
  const CliResult negative = resume_with("progress", progress.dump());
  CHECK(negative.code != 0);
  CHECK_THAT(negative.output, ContainsSubstring("progress has a negative step (-100)"));
  nlohmann::json config = nlohmann::json::parse(file.metadata.at("config"));
  config["seed"] = -1;
  const CliResult seed = resume_with("config", config.dump());
  CHECK(seed.code != 0);
  CHECK_THAT(seed.output, ContainsSubstring("setting 'seed' = -1 is not a value it can take"));
}

TEST_CASE("resuming with another architecture (heads, block) is refused by name", "[reliability][checkpoint]") {
  const std::string dir = fresh_temp_dir("arch_resume");
  REQUIRE(run_tapegrok(train_args(dir + "/run", {"--steps", "8"})).code == 0);
  const std::string checkpoint = dir + "/run/checkpoint.safetensors";
  const CliResult heads = run_tapegrok({"train", "--resume", checkpoint, "--heads", "4", "--no-progress"});
  CHECK(heads.code != 0);
  CHECK_THAT(heads.output, ContainsSubstring("written with heads = 2 but this run has 4"));
  const CliResult block = run_tapegrok({"train", "--resume", checkpoint, "--block", "prenorm", "--no-progress"});
  CHECK(block.code != 0);
  CHECK_THAT(block.output, ContainsSubstring("written with block = reference"));
}

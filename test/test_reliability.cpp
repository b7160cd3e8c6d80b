// Bad input through the CLI and run files: each case gets a clear error naming the setting or the
// file, and loses nothing (docs/reliability.md lists what was tried).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cblas.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "experiments/training/run_directory.h"
#include "experiments/training/trainer.h"
#include "run_support.h"
#include "support.h"

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

TEST_CASE("train --config reads its TOML file; flags win; unknown keys, bad values and missing files are errors",
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

TEST_CASE("a method without a recorded form is refused with --meta-grad unrolled before the run writes anything",
          "[reliability][cli]") {
  const std::string dir = fresh_temp_dir("recorded_combination");
  const CliResult r = run_tapegrok(train_args(dir + "/run", {"--method", "neuralgrok", "--outer-fraction", "0.05",
                                                             "--amp-hidden", "4,4", "--meta-grad", "unrolled",
                                                             "--grad-normalize", "0.5"}));
  CHECK(r.code != 0);
  CHECK_THAT(r.output, ContainsSubstring("gradient method 'per-tensor normalisation' has no recorded form"));
  CHECK_THAT(r.output, ContainsSubstring("leave out --grad-normalize"));
  CHECK_FALSE(fs::exists(dir + "/run/config.json"));
  CHECK_FALSE(fs::exists(dir + "/run/metrics.jsonl"));
  // The lookahead meta-gradient runs no recorded step, so the same flags are a valid run there.
  const CliResult lookahead = run_tapegrok(train_args(dir + "/lookahead", {"--method", "neuralgrok", "--outer-fraction",
                                                                           "0.05", "--amp-hidden", "4,4",
                                                                           "--grad-normalize", "0.5", "--steps", "4"}));
  CHECK(lookahead.code == 0);
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

namespace {

// metrics.jsonl without the wall time, one record per line.
std::vector<std::string> records_without_time(const std::string& run_dir) {
  std::vector<std::string> out;
  std::istringstream lines(read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("wall_time");
    out.push_back(j.dump());
  }
  return out;
}

std::int64_t last_logged_step(const std::string& run_dir) {
  std::istringstream lines(read_file(run_dir + "/metrics.jsonl"));
  std::int64_t step = 0;
  for (std::string line; std::getline(lines, line);) {
    try {
      step = nlohmann::json::parse(line).at("step").get<std::int64_t>();
    } catch (const nlohmann::json::exception&) {
      break;  // a line being written
    }
  }
  return step;
}

// Starts the CLI binary and kill -9s it once its log has passed step `after`. False if it ended first.
bool run_and_kill(std::vector<std::string> args, std::int64_t after, const std::string& run_dir) {
  args.insert(args.begin(), TAPEGROK_BINARY);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  REQUIRE(posix_spawn(&pid, argv[0], &quiet, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&quiet);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (last_logged_step(run_dir) > after) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return true;
    }
    ::usleep(200);
  }
  return false;
}

}  // namespace

TEST_CASE("a run killed after a checkpoint resumes to exactly the uninterrupted run's metrics", "[reliability][resume]") {
  const std::string dir = fresh_temp_dir("kill_resume");
  // Checkpoints every 10 steps, evaluations every 4: a checkpoint falls between two evaluations, and
  // the killed process has logged records after its last checkpoint. The unrolled NeuralGrok run
  // (windows of 3 steps) checkpoints only when a window closes.
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"standard", {"--steps", "120", "--eval-every", "4", "--checkpoint-every", "10"}},
      {"unrolled", {"--steps", "45", "--eval-every", "4", "--checkpoint-every", "10", "--method", "neuralgrok",
                    "--outer-fraction", "0.05", "--amp-hidden", "4,4", "--meta-grad", "unrolled", "--meta-every",
                    "3"}},
  };
  for (const auto& [name, flags] : runs) {
    CAPTURE(name);
    std::vector<std::string> base = {"--task", "a+b", "--modulus", "11", "--width", "16", "--heads", "2",
                                     "--layers", "1", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu",
                                     "--no-progress"};
    base.insert(base.end(), flags.begin(), flags.end());
    std::vector<std::string> whole = {"train", "--run-dir", dir + "/" + name + "_whole"};
    whole.insert(whole.end(), base.begin(), base.end());
    REQUIRE(run_tapegrok(whole).code == 0);

    const std::string killed = dir + "/" + name + "_killed";
    std::vector<std::string> first = {"train", "--run-dir", killed};
    first.insert(first.end(), base.begin(), base.end());
    REQUIRE(run_and_kill(first, 13, killed));
    UNSCOPED_INFO("killed after step " << last_logged_step(killed));
    REQUIRE(fs::exists(killed + "/checkpoint.safetensors"));
    const CliResult resumed = run_tapegrok({"train", "--resume", killed + "/checkpoint.safetensors", "--no-progress"});
    REQUIRE(resumed.code == 0);
    CHECK(records_without_time(killed) == records_without_time(dir + "/" + name + "_whole"));
  }
}

TEST_CASE("train --resume writes into the checkpoint's folder or --run-dir, never the folder stored in the file",
          "[reliability][resume]") {
  const std::string dir = fresh_temp_dir("resume_dir");
  REQUIRE(run_tapegrok(train_args(dir + "/original", {"--steps", "8"})).code == 0);
  const std::string original_metrics = read_file(dir + "/original/metrics.jsonl");
  fs::create_directories(dir + "/copy");
  fs::copy_file(dir + "/original/checkpoint.safetensors", dir + "/copy/checkpoint.safetensors");
  REQUIRE(run_tapegrok({"train", "--resume", dir + "/copy/checkpoint.safetensors", "--steps", "16",
                        "--no-progress"}).code == 0);
  CHECK(read_file(dir + "/original/metrics.jsonl") == original_metrics);  // untouched
  CHECK(fs::exists(dir + "/copy/metrics.jsonl"));
  CHECK(fs::exists(dir + "/copy/summary.json"));

  // A crafted config naming another directory changes nothing there.
  tg::SafetensorsFile file = tg::load_safetensors(dir + "/original/checkpoint.safetensors");
  std::vector<std::pair<std::string, tg::Tensor>> tensors;
  for (const std::string& n : file.names) tensors.emplace_back(n, file.at(n));
  auto config = nlohmann::json::parse(file.metadata.at("config"));
  config["run_dir"] = dir + "/elsewhere";
  file.metadata["config"] = config.dump();
  fs::create_directories(dir + "/crafted");
  tg::save_safetensors(dir + "/crafted/checkpoint.safetensors", tensors, file.metadata);
  REQUIRE(run_tapegrok({"train", "--resume", dir + "/crafted/checkpoint.safetensors", "--steps", "16",
                        "--no-progress"}).code == 0);
  CHECK_FALSE(fs::exists(dir + "/elsewhere"));
  CHECK(fs::exists(dir + "/crafted/summary.json"));
}

TEST_CASE("run directories: no second run, no run at once, no links followed, no stale temp files",
          "[reliability][run-dir]") {
  const std::string dir = fresh_temp_dir("run_dir");
  const std::string run = dir + "/run";
  REQUIRE(run_tapegrok(train_args(run, {"--steps", "8"})).code == 0);
  const std::string metrics = read_file(run + "/metrics.jsonl");

  // A fresh run into it is refused, and the old run's files stay as they were.
  const CliResult again = run_tapegrok(train_args(run, {"--steps", "8"}));
  CHECK(again.code != 0);
  CHECK_THAT(again.output, ContainsSubstring("run directory " + run + " already holds a run"));
  CHECK(read_file(run + "/metrics.jsonl") == metrics);

  // A run while another process holds the directory is refused.
  {
    const tg::RunDirectory held(run, /*resuming=*/true);
    const CliResult concurrent = run_tapegrok({"train", "--resume", run + "/checkpoint.safetensors", "--steps",
                                               "16", "--no-progress"});
    CHECK(concurrent.code != 0);
    CHECK_THAT(concurrent.output, ContainsSubstring("is in use by another tapegrok process"));
  }

  // Links planted in the directory are replaced, their targets untouched; a temp file of a killed
  // writer (a pid no process can have) is removed.
  write_text(dir + "/target.txt", "precious");
  fs::remove(run + "/summary.json");
  fs::create_symlink(dir + "/target.txt", run + "/summary.json");
  fs::remove(run + "/config.json");
  fs::create_symlink(dir + "/target.txt", run + "/config.json");
  write_text(run + "/checkpoint.safetensors.tmp.4194305.0", "half a checkpoint");
  REQUIRE(run_tapegrok({"train", "--resume", run + "/checkpoint.safetensors", "--steps", "16", "--no-progress"})
              .code == 0);
  CHECK(read_file(dir + "/target.txt") == "precious");
  CHECK(fs::is_regular_file(fs::symlink_status(run + "/summary.json")));
  CHECK(fs::is_regular_file(fs::symlink_status(run + "/config.json")));
  CHECK_FALSE(fs::exists(run + "/checkpoint.safetensors.tmp.4194305.0"));
}

TEST_CASE("a full disk stops the run with the file's name instead of leaving empty files", "[reliability][run-dir]") {
  const std::string dir = fresh_temp_dir("disk_full");
  CliResult r;
  {
    const FileSizeLimit limit(512);  // config.json is larger
    r = run_tapegrok(train_args(dir + "/run", {"--steps", "8"}));
  }
  CHECK(r.code != 0);
  CHECK_THAT(r.output, ContainsSubstring("cannot write " + dir + "/run/config.json") &&
                           ContainsSubstring("File too large"));
  CHECK_FALSE(fs::exists(dir + "/run/config.json"));
}

TEST_CASE("reading files: the header is checked before the data, non-files are refused, allocations bounded",
          "[reliability][safetensors]") {
  const std::string dir = fresh_temp_dir("reading");
  // A FIFO: refused at once instead of waiting forever for a writer.
  const std::string fifo = dir + "/fifo.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(tg::load_safetensors(fifo), ContainsSubstring(fifo + " is not a regular file"));

  // A 3 GB sparse file with a header length past its end: refused from its first 8 bytes, without
  // reading (or allocating) the rest.
  const std::string sparse = dir + "/sparse.safetensors";
  {
    std::ofstream out(sparse, std::ios::binary);
    const std::uint64_t length = 1ull << 40;
    out.write(reinterpret_cast<const char*>(&length), 8);
  }
  fs::resize_file(sparse, 3ull << 30);
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  CHECK_THROWS_WITH(tg::load_safetensors(sparse), ContainsSubstring("header length"));
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  CHECK(after.ru_maxrss - before.ru_maxrss < 256 * 1024);  // KiB: far below the file's 3 GiB

  // A NUL byte inside the header ends nothing: "{...}\0junk" is not JSON.
  std::string header = "{\"__metadata__\":{\"a\":\"b\"}}";
  header += std::string("\0junk", 5);
  std::string bytes(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  write_text(dir + "/nul.safetensors", bytes + header);
  CHECK_THROWS_WITH(tg::load_safetensors(dir + "/nul.safetensors"), ContainsSubstring("NUL byte at offset"));

  // Names with terminal escapes are escaped in every message that shows them.
  const std::string red = "\x1b[31mred";
  tg::save_safetensors(dir + "/names.safetensors", {{red, tg::Tensor::zeros({1}, tg::DType::f32, tg::Device::cpu())}},
                       {{"step", red}});
  const tg::SafetensorsFile file = tg::load_safetensors(dir + "/names.safetensors");
  std::string missing, counter;
  try {
    (void)file.at("other");
  } catch (const tg::Error& e) {
    missing = e.what();
  }
  try {
    (void)file.metadata_integer("step");
  } catch (const tg::Error& e) {
    counter = e.what();
  }
  CHECK_THAT(missing, ContainsSubstring("\\x1b[31mred"));
  CHECK(missing.find('\x1b') == std::string::npos);
  CHECK_THAT(counter, ContainsSubstring("\\x1b[31mred"));
  CHECK(counter.find('\x1b') == std::string::npos);

  // A weak checkpoint of a few bytes with empty factors [23, 0] x [0, 1e8]: refused before the
  // product (9 GB) is allocated.
  const std::string weak = dir + "/weak.safetensors";
  tg::save_safetensors(weak, {{"token_embeddings.A", tg::Tensor::zeros({23, 0}, tg::DType::f32, tg::Device::cpu())},
                              {"token_embeddings.B",
                               tg::Tensor::zeros({0, 100000000}, tg::DType::f32, tg::Device::cpu())}});
  tg::TrainConfig c = tiny_run_config(dir + "/target");
  c.embedding_rank = 4;
  c.init_embedding_from = weak;
  CHECK_THROWS_WITH(tg::Trainer(c), ContainsSubstring("make an embedding larger than"));
}

TEST_CASE("numerical faults stop a run, eval and a loaded amplifier, naming the tensor", "[reliability][numerics]") {
  const std::string dir = fresh_temp_dir("numerics");
  // Gradients rescaled to norm 1e30 per tensor: Adam's second moment overflows to inf while every
  // loss stays finite (the update becomes 0, and the run would "train" without moving).
  const CliResult huge = run_tapegrok(train_args(dir + "/huge", {"--steps", "8", "--grad-normalize", "1e30"}));
  CHECK(huge.code != 0);
  CHECK_THAT(huge.output, ContainsSubstring("training diverged by step") &&
                              ContainsSubstring("the optimizer's exp_avg_sq of tensor '"));

  // NaN weights in a checkpoint: eval and resume refuse it, naming the tensor.
  REQUIRE(run_tapegrok(train_args(dir + "/run", {"--steps", "8"})).code == 0);
  tg::SafetensorsFile file = tg::load_safetensors(dir + "/run/checkpoint.safetensors");
  std::vector<std::pair<std::string, tg::Tensor>> tensors;
  for (const std::string& name : file.names) {
    tg::Tensor t = file.at(name).clone();
    if (name == "head.weight") static_cast<float*>(t.raw_data())[5] = std::nanf("");
    tensors.emplace_back(name, t);
  }
  fs::create_directories(dir + "/nan");
  tg::save_safetensors(dir + "/nan/checkpoint.safetensors", tensors, file.metadata);
  const CliResult eval = run_tapegrok({"eval", "--checkpoint", dir + "/nan/checkpoint.safetensors"});
  CHECK(eval.code != 0);
  CHECK_THAT(eval.output, ContainsSubstring("tensor 'head.weight' holds nan at flat index 5"));
  const CliResult resume = run_tapegrok({"train", "--resume", dir + "/nan/checkpoint.safetensors", "--no-progress"});
  CHECK(resume.code != 0);
  CHECK_THAT(resume.output, ContainsSubstring("tensor 'head.weight' holds nan"));

  // A NaN amplifier (--amp-from) is refused before it trains.
  REQUIRE(run_tapegrok(train_args(dir + "/ng", {"--steps", "4", "--method", "neuralgrok", "--outer-fraction", "0.05",
                                                "--amp-hidden", "4,4"}))
              .code == 0);
  tg::SafetensorsFile amp = tg::load_safetensors(dir + "/ng/amplifier.safetensors");
  std::vector<std::pair<std::string, tg::Tensor>> amp_tensors;
  for (const std::string& name : amp.names) {
    tg::Tensor t = amp.at(name).clone();
    static_cast<float*>(t.raw_data())[0] = std::numeric_limits<float>::infinity();
    amp_tensors.emplace_back(name, t);
  }
  tg::save_safetensors(dir + "/bad_amp.safetensors", amp_tensors, amp.metadata);
  const CliResult from = run_tapegrok(train_args(dir + "/ng2", {"--steps", "4", "--method", "neuralgrok",
                                                                "--outer-fraction", "0.05", "--amp-hidden", "4,4",
                                                                "--amp-from", dir + "/bad_amp.safetensors"}));
  CHECK(from.code != 0);
  CHECK_THAT(from.output, ContainsSubstring("holds inf at flat index 0"));
  CHECK_FALSE(fs::exists(dir + "/ng2/checkpoint.safetensors"));
}

TEST_CASE("config.json and --version name the commit the binary was built from", "[reliability][determinism]") {
  // What git says of the source tree now: the build recorded it when this test binary was built.
  std::string head = "unknown";
  if (FILE* pipe = ::popen(("git -C '" + std::string(TAPEGROK_SOURCE_DIR) + "' rev-parse HEAD 2>/dev/null").c_str(), "r")) {
    char line[128] = {};
    if (std::fgets(line, sizeof line, pipe) != nullptr) head = std::string(line).substr(0, 40);
    if (::pclose(pipe) != 0) head = "unknown";
  }
  const std::string dir = fresh_temp_dir("build-info");
  REQUIRE(run_tapegrok(train_args(dir + "/run", {"--steps", "1"})).code == 0);
  const auto build = nlohmann::json::parse(read_file(dir + "/run/config.json")).at("runtime").at("build");
  CHECK(build.at("commit") == head);
  CHECK(build.at("dirty").is_boolean());
  const CliResult version = run_tapegrok({"--version"});
  CHECK(version.code == 0);
  CHECK_THAT(version.output, ContainsSubstring("tapegrok " + head));
}

TEST_CASE("config.json records the BLAS thread count the run's bits depend on", "[reliability][determinism]") {
  const std::string dir = fresh_temp_dir("threads");
  REQUIRE(run_tapegrok(train_args(dir + "/run", {"--steps", "2"})).code == 0);
  const auto config = nlohmann::json::parse(read_file(dir + "/run/config.json"));
  CHECK(config.at("runtime").at("blas_threads") == openblas_get_num_threads());
  CHECK(config.at("runtime").at("device") == "cpu");
}

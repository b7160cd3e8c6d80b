// Sweeps: the grid file (errors name the file, key and run), the expansion, the censored statistics
// against hand-worked Kaplan-Meier estimates, and the local runner end to end through the real binary
// (failures recorded without stopping the others, finished runs skipped, a lengthened run resumed to the
// same metrics as a fresh run of that length).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "experiments/sweep/slurm_backend.h"
#include "experiments/sweep/sweep_report.h"
#include "experiments/sweep/sweep_spec.h"
#include "run_support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

// The small model of the tiny test runs (test/run_support.cpp), as sweep-file keys.
const char* kTinyTrain = R"(
task = "a+b"
modulus = 11
width = 16
heads = 2
layers = 1
batch-size = 16
eval-every = 8
lr = 3e-3
device = "cpu"
)";

// `tapegrok ARGS` as its own process (the sweep runner starts the binary it runs in); output to `log`.
int run_binary(const std::string& args, const std::string& log) {
  const int status = std::system((std::string(TAPEGROK_BINARY) + " " + args + " > '" + log + "' 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The metrics of a run without the wall-clock fields, one record per line.
std::vector<nlohmann::json> metrics_without_times(const std::string& run_dir) {
  std::vector<nlohmann::json> records;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json r = nlohmann::json::parse(line);
    r.erase("wall_time");
    records.push_back(r);
  }
  return records;
}

}  // namespace

TEST_CASE("sweep files expand to every run, seeds outermost, cells overriding the common flags", "[sweep]") {
  const std::string dir = fresh_temp_dir("sweep_expand");
  const std::string file = write(dir + "/grid.toml", std::string(R"(
name = "grid"
runs = ")" + dir + R"(/runs"
seeds = [3, 5]
[train]
steps = 30
)") + kTinyTrain + R"(
[grid]
task = ["a+b", "a*b"]
method = [ { label = "plain" }, { label = "ema", method = "grokfast-ema", steps = 40 } ]
)");
  const SweepSpec spec = read_sweep_file(file);
  const std::vector<SweepRun> runs = expand_sweep(spec);
  REQUIRE(runs.size() == 8);
  std::vector<std::string> names;
  for (const SweepRun& r : runs) names.push_back(r.name);
  CHECK(names == std::vector<std::string>{"a+b/plain/seed3", "a+b/ema/seed3", "a*b/plain/seed3", "a*b/ema/seed3",
                                          "a+b/plain/seed5", "a+b/ema/seed5", "a*b/plain/seed5", "a*b/ema/seed5"});
  CHECK(runs[3].run_dir == dir + "/runs/axb/ema/seed3");
  CHECK(runs[3].config.task == "a*b");
  CHECK(runs[3].config.method == "grokfast-ema");
  CHECK(runs[3].config.max_steps == 40);  // the cell's steps over [train]'s
  CHECK(runs[2].config.max_steps == 30);
  CHECK(runs[6].config.seed == 5);
  CHECK(runs[6].config.modulus == 11);

  // The same grid as JSON gives the same runs.
  const std::string json = write(dir + "/grid.json", R"({"name": "grid", "runs": ")" + dir + R"(/runs",
    "seeds": [3, 5], "train": {"steps": 30, "task": "a+b", "modulus": 11, "width": 16, "heads": 2, "layers": 1,
    "batch-size": 16, "eval-every": 8, "lr": 0.003, "device": "cpu"},
    "grid": {"task": ["a+b", "a*b"], "method": [{"label": "plain"},
             {"label": "ema", "method": "grokfast-ema", "steps": 40}]}})");
  const std::vector<SweepRun> from_json = expand_sweep(read_sweep_file(json));
  REQUIRE(from_json.size() == runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    CHECK(from_json[i].name == runs[i].name);
    CHECK(to_json(from_json[i].config) == to_json(runs[i].config));
  }
}

TEST_CASE("bad sweep files are refused naming the file, the key and the run", "[sweep][errors]") {
  const std::string dir = fresh_temp_dir("sweep_errors");
  auto refused = [&](const std::string& body) {
    const std::string file = write(dir + "/bad.toml", body);
    try {
      expand_sweep(read_sweep_file(file));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(refused("seeds = [0]\ncolour = 1\n"), ContainsSubstring("bad.toml") && ContainsSubstring("'colour'"));
  CHECK_THAT(refused("[train]\nsteps = 3\n"), ContainsSubstring("'seeds' is missing"));
  CHECK_THAT(refused("seeds = [0, 0]\n"), ContainsSubstring("appears twice"));
  CHECK_THAT(refused("seeds = [-1]\n"), ContainsSubstring("not a non-negative integer"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nsteps = \n"), ContainsSubstring("line 3"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nseed = 4\n"), ContainsSubstring("'seed' is set by the sweep"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nrun-dir = \"x\"\n"), ContainsSubstring("'run-dir' is set by the sweep"));
  CHECK_THAT(refused("seeds = [0]\n[grid]\ntask = [\"a+b\", \"a/b\"]\n"),
             ContainsSubstring("run 'a/b/seed0'") && ContainsSubstring("--task 'a/b'"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nno-such-flag = 1\n"),
             ContainsSubstring("run 'seed0'") && ContainsSubstring("--no-such-flag"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nlr = \"fast\"\n"), ContainsSubstring("--lr"));
  CHECK_THAT(refused("seeds = [0]\n[grid]\ntask = [\"a+b\", \"a+b\"]\n"), ContainsSubstring("'a+b' appears twice"));
  CHECK_THAT(refused("seeds = [0]\n[grid]\nm = [{ method = \"grokfast-ema\" }]\n"), ContainsSubstring("'label'"));
  CHECK_THAT(refused("seeds = [0]\n[grid]\nx = [{ label = \"a\", lr = 0.1 }]\ny = [{ label = \"b\", lr = 0.2 }]\n"),
             ContainsSubstring("two axes set 'lr'"));
  CHECK_THAT(refused("seeds = [0]\n[grid]\nv = [{ label = \"a*b\" }, { label = \"axb\" }]\n"),
             ContainsSubstring("would share the directory"));
  CHECK_THAT(refused("seeds = [0]\n[slurm]\nqueue = \"x\"\n"), ContainsSubstring("slurm: unknown key 'queue'"));
  CHECK_THAT(refused("seeds = [0]\n[train]\nsteps = 1979-05-27\n"), ContainsSubstring("dates"));
  CHECK_THAT(refused(""), ContainsSubstring("'seeds' is missing"));
  write(dir + "/bad.yaml", "seeds: [0]\n");
  CHECK_THROWS_WITH(read_sweep_file(dir + "/bad.yaml"), ContainsSubstring("expected a .toml or .json file"));
  CHECK_THROWS_WITH(read_sweep_file(dir + "/missing.toml"), ContainsSubstring("not a readable file"));
}

TEST_CASE("censored quantiles match hand-worked Kaplan-Meier estimates", "[sweep]") {
  // Reached at 100, 300, 400; ended unreached at 200 and 500. KM: F(100) = 1/5; after the censoring at
  // 200 three remain, F(300) = 1 - 4/5 * 2/3 = 7/15; F(400) = 1 - 8/15 * 1/2 = 11/15; never >= 3/4.
  const std::vector<TimeToThreshold> mixed = {{500, false}, {100, true}, {300, true}, {200, false}, {400, true}};
  CHECK(censored_quantile(mixed, 0.2) == 100.0);
  CHECK(censored_quantile(mixed, 0.25) == 300.0);
  CHECK(censored_quantile(mixed, 0.5) == 400.0);
  CHECK_FALSE(censored_quantile(mixed, 0.75).has_value());
  // One common budget: the plain sample quantile with the unreached seeds last.
  const std::vector<TimeToThreshold> budget = {{900, true}, {1200, true}, {6000, false}, {1500, true}, {6000, false}};
  CHECK(censored_quantile(budget, 0.25) == 1200.0);
  CHECK(censored_quantile(budget, 0.5) == 1500.0);
  CHECK_FALSE(censored_quantile(budget, 0.75).has_value());
  // A run reaching the threshold at the step another ended unreached counts first (that one was at risk).
  CHECK(censored_quantile({{10, false}, {10, true}}, 0.5) == 10.0);
  CHECK_FALSE(censored_quantile({{10, false}, {20, false}}, 0.5).has_value());
  CHECK_THROWS(censored_quantile(mixed, 1.0));
  // Linear interpolation between order statistics, as numpy.quantile's default.
  CHECK_THAT(quantile({4, 1, 3, 2}, 0.25), Catch::Matchers::WithinAbs(1.75, 1e-15));
  CHECK(quantile({7}, 0.75) == 7.0);
  CHECK(array_ranges({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8");
  CHECK(label_path("a*c+b*d-e") == "axc+bxd-e");
  CHECK(label_path("lr 0.1/x") == "lr_0.1_x");
}

TEST_CASE("sweep report: steps to 95% per cell over seeds from the runs' own files", "[sweep]") {
  const std::string dir = fresh_temp_dir("sweep_report");
  const std::string file = write(dir + "/r.toml", "seeds = 3\nruns = \"" + dir + "/runs\"\n[train]\nsteps = 100\n" +
                                                      "stop-at-test-acc = 0.95\n[grid]\nmethod = [\"standard\"]\n");
  const SweepSpec spec = read_sweep_file(file);
  const std::vector<SweepRun> runs = expand_sweep(spec);
  // Seeds 0 and 1 reach 95% at steps 40 and 60 (and stop); seed 2 ends at its budget without.
  const std::vector<std::vector<double>> curves = {{0.1, 0.5, 0.96}, {0.1, 0.2, 0.6, 0.8, 0.97}, {0.1, 0.2, 0.3, 0.4}};
  for (std::size_t s = 0; s < 3; ++s) {
    fs::create_directories(runs[s].run_dir);
    std::ofstream metrics(runs[s].run_dir + "/metrics.jsonl");
    for (std::size_t k = 0; k < curves[s].size(); ++k) {
      const std::int64_t step = s == 2 ? 25 * static_cast<std::int64_t>(k + 1) : 20 * static_cast<std::int64_t>(k + 1);
      metrics << nlohmann::json{{"step", step}, {"test_acc", curves[s][k]}, {"train_acc", 1.0}}.dump() << "\n";
    }
    const std::int64_t last = s == 0 ? 60 : s == 1 ? 100 : 100;
    const std::int64_t first95 = s == 0 ? 60 : s == 1 ? 100 : -1;
    write(runs[s].run_dir + "/summary.json",
          nlohmann::json{{"step", last}, {"last_test_acc", curves[s].back()}, {"wall_seconds", 10.0 * (s + 1)},
                         {"first_test_95", first95}, {"first_test_99", -1}}
              .dump());
  }
  // Seeds 0 and 1 were made by two builds; seed 2's binary predates the record.
  write(runs[0].run_dir + "/config.json", R"({"runtime": {"build": {"commit": "aaaa", "dirty": false}}})");
  write(runs[1].run_dir + "/config.json", R"({"runtime": {"build": {"commit": "bbbb", "dirty": true}}})");
  const std::string out = write_sweep_report(spec, runs, dir + "/report");
  CHECK_THAT(read_file(out + "/report.md"),
             ContainsSubstring("from 3 builds**, whose results may differ in the last bits (runs.csv says which "
                               "made each run): aaaa (1 runs); bbbb (modified) (1 runs); not recorded (1 runs)."));
  CHECK_THAT(read_file(out + "/runs.csv"), ContainsSubstring(",bbbb (modified)\n"));
  const std::string cells = read_file(out + "/cells.csv");
  // Two of three reached: median = the second event (100), Q1 = 60, Q3 past the budget (empty).
  CHECK_THAT(cells, ContainsSubstring("standard,standard,3,3,2,100,60,,0,,,,100,20.0"));
  const std::string md = read_file(out + "/report.md");
  CHECK_THAT(md, ContainsSubstring("| standard | 2/3 | 100 [60, > 100] | 0/3 | > 100 [> 100, > 100] | 20 s |"));
  // Curves: at step 40 seed 0 has 0.5, seed 1 0.2 and seed 2 (last evaluated at 25) 0.1: median 0.2.
  CHECK_THAT(read_file(out + "/curves.csv"), ContainsSubstring("standard,40,3,0.2,"));
  CHECK_THAT(read_file(out + "/runs.csv"), ContainsSubstring("standard,standard,2,100,0,100,0,100,100,0.4,30,"));
  // Seed 0 stopped at 95% (step 60) inside its budget of 100 steps: runs.csv gives both.
  CHECK_THAT(read_file(out + "/runs.csv"), ContainsSubstring("standard,standard,0,60,1,60,0,60,100,0.96,10,"));
}

TEST_CASE("the local sweep runner: failures recorded, the rest run, finished runs skipped, resume exact",
          "[sweep][reliability]") {
  const std::string dir = fresh_temp_dir("sweep_local");
  auto sweep_file = [&](int steps) {
    return write(dir + "/local.toml", "name = \"local\"\nruns = \"" + dir + "/runs\"\nseeds = [0]\n[train]\n" +
                                          kTinyTrain + "steps = " + std::to_string(steps) +
                                          "\ncheckpoint-every = 8\n[grid]\nmethod = [{ label = \"standard\" }, "
                                          "{ label = \"ema\", method = \"grokfast-ema\" }, { label = \"broken\", "
                                          "method = \"neuralgrok\", outer-fraction = 0.2, amp-from = \"" +
                                          dir + "/no-such-amplifier.safetensors\" }]\n");
  };
  const std::string file = sweep_file(16);
  const std::string log = dir + "/sweep.log";
  CHECK(run_binary("sweep run '" + file + "' --jobs 2", log) == 1);  // one run failed
  const std::string output = read_file(log);
  CHECK_THAT(output, ContainsSubstring("FAILED broken/seed0") && ContainsSubstring("no-such-amplifier"));
  CHECK_THAT(output, ContainsSubstring("2/3 runs finished, 1 failed"));
  CHECK(fs::exists(dir + "/runs/standard/seed0/summary.json"));
  CHECK(fs::exists(dir + "/runs/ema/seed0/summary.json"));
  CHECK_THAT(read_file(dir + "/runs/broken/seed0/sweep_failure.json"), ContainsSubstring("no-such-amplifier"));

  CHECK(run_binary("sweep status '" + file + "'", log) == 0);
  CHECK_THAT(read_file(log), ContainsSubstring("2 finished") && ContainsSubstring("1 failed") &&
                                 ContainsSubstring("broken/seed0: ") && ContainsSubstring("no-such-amplifier"));

  // Nothing left to run: the finished runs are skipped, the failed one is not retried.
  const std::string standard_metrics = read_file(dir + "/runs/standard/seed0/metrics.jsonl");
  CHECK(run_binary("sweep run '" + file + "'", log) == 1);
  CHECK_THAT(read_file(log), ContainsSubstring("2 finished, 1 failed") && ContainsSubstring("0 to run"));
  CHECK(read_file(dir + "/runs/standard/seed0/metrics.jsonl") == standard_metrics);

  // A longer budget turns the finished runs into interrupted ones; they resume from their checkpoints to
  // exactly the metrics of a fresh 24-step run.
  sweep_file(24);
  CHECK(run_binary("sweep run '" + file + "'", log) == 1);
  CHECK_THAT(read_file(log), ContainsSubstring("start  standard/seed0 (resuming its checkpoint)"));
  std::vector<std::string> fresh = tiny_run_flags(dir + "/fresh");
  fresh.insert(fresh.begin(), "train");
  fresh.insert(fresh.end(), {"--steps", "24"});
  REQUIRE(run_tapegrok(fresh).code == 0);
  const std::vector<nlohmann::json> resumed = metrics_without_times(dir + "/runs/standard/seed0");
  REQUIRE(resumed.size() == 3);
  CHECK(resumed == metrics_without_times(dir + "/fresh"));

  // --retry-failed runs the failed one again (and it fails again, recorded anew).
  CHECK(run_binary("sweep run '" + file + "' --retry-failed", log) == 1);
  CHECK_THAT(read_file(log), ContainsSubstring("1 to run") && ContainsSubstring("FAILED broken/seed0"));
}

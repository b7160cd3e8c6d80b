// Shared helpers for the tests that train whole runs (trainer, sync-free steps, GrokTransfer).
#pragma once

#include <string>
#include <vector>

#include "experiments/training/train_config.h"

namespace tgtest {

// A fresh, empty directory under the system temp dir, unique to this process.
std::string fresh_temp_dir(const std::string& name);

// The whole file as bytes ("" when it cannot be read).
std::string read_file(const std::string& path);

// A run small enough for a unit test on the CPU: a+b mod 11 (55 training examples, batches of 16, 16,
// 16 and a partial 7 per epoch), a 1-layer Transformer of width 16, 24 steps, evaluation every 8.
tg::TrainConfig tiny_run_config(const std::string& run_dir);

// `tapegrok ARGS...` in this process: its exit code and what it printed (stdout and stderr).
struct CliResult {
  int code = 0;
  std::string output;
};
CliResult run_tapegrok(std::vector<std::string> args);

// The tiny run's settings as flags (all but --steps), writing into run_dir.
std::vector<std::string> tiny_run_flags(const std::string& run_dir);

}  // namespace tgtest

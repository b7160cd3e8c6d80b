// `tapegrok train`: its options (the TrainConfig fields, --config, --preset, --resume) and the run. The
// same options parse the train flags of a sweep cell, so a sweep accepts exactly what `train` accepts.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/cli/cli_options.h"
#include "experiments/training/checkpoint.h"
#include "experiments/training/train_config.h"

namespace tg {

// What a train command line asks for: the settings, and the checkpoint to resume ("" for a new run).
struct TrainRequest {
  TrainConfig config;
  std::string resume;
};

// Trains (or resumes) as `tapegrok train` does and returns the final progress. `on_evaluation` sees
// every evaluation's metrics record; `print` the start and summary lines.
RunProgress run_training(const TrainRequest& request,
                         std::function<void(const nlohmann::json& record)> on_evaluation = {}, bool print = true);

class TrainCommand {
 public:
  explicit TrainCommand(CLI::App& parent);  // registers the subcommand "train" on `parent`

  CLI::App* app() const { return app_; }
  bool chosen() const { return app_->parsed(); }

  // The run's settings once parsed: the config file, preset and checkpoint under the flags given.
  TrainRequest resolved() const;

 private:
  CLI::App* app_;
  TrainConfig flags_;  // what CLI11 writes into
  std::unique_ptr<ConfigOptions> options_;
  std::string config_file_, preset_, resume_;
};

// Parses train flags (without "train" itself) as `tapegrok train` would and returns the settings,
// validated. Throws tg::Error with CLI11's message (naming the flag) for an unknown flag or bad value.
TrainRequest parse_train_flags(const std::vector<std::string>& flags);

}  // namespace tg

// The TrainConfig fields as command-line options, shared by every subcommand that builds a run.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <limits>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "experiments/training/train_config.h"

namespace tg {

// Accepts only a plain decimal integer that T holds exactly: no "1e20", "12abc", "-1" for an unsigned
// setting or values past T's range, which a conversion would otherwise round, cut or wrap.
template <class T>
CLI::Validator exact_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        T value{};
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || error != std::errc() || stop != end) {
          return "'" + text + "' is not an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                 std::to_string(std::numeric_limits<T>::max()) + "]";
        }
        return "";
      },
      "INT");
}

// Registers TrainConfig fields as CLI options and remembers, per option, how to copy the field, so a
// resumed run can take exactly the options given on its command line over the checkpoint's config.
class ConfigOptions {
 public:
  ConfigOptions(CLI::App* app, TrainConfig& config) : app_(app), config_(config) {}

  template <class T>
  CLI::Option* add(const std::string& flag, T TrainConfig::*field, const std::string& help) {
    CLI::Option* opt = nullptr;
    if constexpr (std::is_same_v<T, bool>) {
      opt = app_->add_flag(flag, config_.*field, help);  // a switch: present means true
    } else {
      opt = app_->add_option(flag, config_.*field, help)->capture_default_str();
      if constexpr (std::is_integral_v<T>) opt->check(exact_integer<T>());
    }
    copiers_.emplace_back(opt, [field](TrainConfig& dst, const TrainConfig& src) { dst.*field = src.*field; });
    return opt;
  }

  // `base` with every option that was given explicitly taken from the parsed config.
  TrainConfig given_over(TrainConfig base) const {
    for (const auto& [opt, copy] : copiers_) {
      if (opt->count() > 0) copy(base, config_);
    }
    return base;
  }

 private:
  CLI::App* app_;
  TrainConfig& config_;
  std::vector<std::pair<CLI::Option*, std::function<void(TrainConfig&, const TrainConfig&)>>> copiers_;
};

// Task, model, device and dtype options.
void add_task_and_model_options(ConfigOptions& options);
// Optimisation, gradient-method, evaluation and output options (train).
void add_training_options(ConfigOptions& options, TrainConfig& config, CLI::App* app);
// The amplifier's architecture options (--amp-hidden, --amp-c) alone, for tools that build one.
void add_amplifier_options(ConfigOptions& options);

}  // namespace tg

#include "experiments/cli/train_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "engine/error.h"
#include "experiments/cli/config_file.h"
#include "experiments/training/checkpoint.h"
#include "experiments/training/trainer.h"

namespace tg {

namespace {

// Named bundles of settings; explicit flags still override them.
TrainConfig preset_config(const std::string& name) {
  TrainConfig c;
  if (name == "official") {  // the NeuralGrok official code's settings (docs/methods.md)
    c.method = "neuralgrok";
    c.amp_hidden = "128,128";
    c.amp_c = 0.2;
    c.clip_grad_norm = 1.0;
    c.outer_fraction = 0.01;
    c.meta_every = 4;
    return c;
  }
  throw Error(fmt::format("--preset '{}': expected official", name));
}

void print_summary(const Trainer& t) {
  const RunProgress& p = t.progress();
  auto at = [](std::int64_t s) { return s < 0 ? std::string("not reached") : fmt::format("step {}", s); };
  fmt::print("\n{} mod {} on {}: {} steps in {:.1f} s ({:.1f} steps/s)\n", t.config().task, t.dataset().modulus,
             t.device().str(), p.step, p.wall_seconds, p.wall_seconds > 0 ? p.step / p.wall_seconds : 0.0);
  fmt::print("  final accuracy: train {:.2f}%, test {:.2f}% (test loss {:.4f})\n", 100 * p.last_train_acc,
             100 * p.last_test_acc, p.last_test_loss);
  fmt::print("  test accuracy >= 95%: {}; >= 99%: {}; train accuracy >= 95%: {}\n", at(p.first_test_95),
             at(p.first_test_99), at(p.first_train_95));
  fmt::print("  results in {}/ (config.json, metrics.jsonl, checkpoint.safetensors, summary.json)\n",
             t.config().run_dir);
}

}  // namespace

TrainCommand::TrainCommand(CLI::App& parent)
    : app_(parent.add_subcommand("train", "train a Transformer on a modular-arithmetic task")),
      options_(std::make_unique<ConfigOptions>(app_, flags_)) {
  app_->add_option("--config", config_file_,
                   "read settings from a TOML file (keys are the long flag names; flags given here win)");
  add_task_and_model_options(*options_);
  add_training_options(*options_, flags_, app_);
  app_->add_option("--preset", preset_,
                   "official: NeuralGrok as the official code (amplifier 128,128, c 0.2, clip 1.0, outer 1%, T 4); "
                   "flags given here override it");
  app_->add_option("--resume", resume_,
                   "continue the run saved in this checkpoint (its settings, overridden by flags given here)");
}

TrainRequest TrainCommand::resolved() const {
  if (!config_file_.empty()) apply_config_file(app_, config_file_);
  TrainConfig config = flags_;
  if (!preset_.empty()) config = options_->given_over(preset_config(preset_));
  if (!resume_.empty()) {
    config = options_->given_over(config_from_checkpoint(resume_));
    // Where the resumed run writes: --run-dir, or the checkpoint's own directory. Never the directory
    // stored in the file: a copied (or crafted) checkpoint must not write elsewhere.
    if (app_->get_option("--run-dir")->count() == 0) {
      const std::filesystem::path folder = std::filesystem::path(resume_).parent_path();
      config.run_dir = folder.empty() ? "." : folder.string();
    }
  }
  return {config, resume_};
}

RunProgress run_training(const TrainRequest& request, std::function<void(const nlohmann::json&)> on_evaluation,
                         bool print) {
  const TrainConfig& config = request.config;
  Trainer trainer(config, /*restoring=*/!request.resume.empty());
  if (!request.resume.empty()) {
    trainer.load_checkpoint(request.resume);
    if (print) fmt::print("resumed {} at step {}\n", request.resume, trainer.progress().step);
  }
  if (print) {
    fmt::print("training {} mod {} ({} train / {} test examples) on {}, {} parameters\n", config.task,
               trainer.dataset().modulus, trainer.split().train.size(), trainer.split().test.size(),
               trainer.device().str(), trainer.params().numel());
  }
  trainer.on_evaluation(std::move(on_evaluation));
  const RunProgress progress = trainer.run();
  if (print) print_summary(trainer);
  return progress;
}

TrainRequest parse_train_flags(const std::vector<std::string>& flags) {
  CLI::App parent;
  TrainCommand train(parent);
  std::vector<std::string> args(flags.rbegin(), flags.rend());  // CLI11 takes them last first
  args.push_back("train");
  try {
    parent.parse(args);
  } catch (const CLI::ParseError& e) {
    throw Error(e.what());
  }
  TrainRequest request = train.resolved();
  request.config.validate();
  return request;
}

}  // namespace tg

#include "experiments/cli/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>

#include "engine/error.h"
#include "experiments/cli/cli_options.h"
#include "experiments/cli/config_file.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/dump_state.h"
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

int run_cli(int argc, char** argv) {
  CLI::App app{"tapegrok: grokking experiments on a from-scratch autograd engine"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");

  // ---- train
  TrainConfig train_config;
  std::string resume;
  CLI::App* train = app.add_subcommand("train", "train a Transformer on a modular-arithmetic task");
  std::string config_file;
  train->add_option("--config", config_file,
                    "read settings from a TOML file (keys are the long flag names; flags given here win)");
  ConfigOptions train_options(train, train_config);
  add_task_and_model_options(train_options);
  add_training_options(train_options, train_config, train);
  std::string preset;
  train->add_option("--preset", preset,
                    "official: NeuralGrok as the official code (amplifier 128,128, c 0.2, clip 1.0, outer 1%, T 4); "
                    "flags given here override it");
  train->add_option("--resume", resume,
                    "continue the run saved in this checkpoint (its settings, overridden by flags given here)");

  // ---- eval
  std::string eval_checkpoint, eval_device = "auto";
  CLI::App* eval = app.add_subcommand("eval", "evaluate a run checkpoint on its train, outer and test sets");
  eval->add_option("--checkpoint", eval_checkpoint, "a run's checkpoint.safetensors")->required();
  eval->add_option("--device", eval_device, "auto | cpu | cuda | cuda:N")->capture_default_str();

  // ---- dump-state
  TrainConfig dump_config;
  std::int64_t dump_batch = 16, dump_adam_steps = 0;
  std::string dump_out;
  bool dump_hvp = false;
  CLI::App* dump = app.add_subcommand("dump-state", "write one batch's parameters, logits, loss and gradients");
  ConfigOptions dump_options(dump, dump_config);
  add_task_and_model_options(dump_options);
  dump->add_option("--batch", dump_batch, "examples in the batch (the first of the training split)")->capture_default_str();
  dump->add_option("--adam-steps", dump_adam_steps, "also record the losses of K Adam steps on the batch")
      ->capture_default_str();
  dump->add_flag("--hvp", dump_hvp, "also store a Hessian-vector product of the loss (hvp.<name>)");
  dump->add_option("--out", dump_out, "output safetensors file")->required();

  const std::vector<ExtraCommand> extra_commands = register_extra_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*train) {
      if (!config_file.empty()) apply_config_file(train, config_file);
      TrainConfig config = train_config;
      if (!preset.empty()) config = train_options.given_over(preset_config(preset));
      if (!resume.empty()) {
        config = train_options.given_over(config_from_checkpoint(resume));
        // Where the resumed run writes: --run-dir, or the checkpoint's own directory. Never the
        // directory stored in the file: a copied (or crafted) checkpoint must not write elsewhere.
        if (train->get_option("--run-dir")->count() == 0) {
          const std::filesystem::path folder = std::filesystem::path(resume).parent_path();
          config.run_dir = folder.empty() ? "." : folder.string();
        }
      }
      Trainer trainer(config, /*restoring=*/!resume.empty());
      if (!resume.empty()) {
        trainer.load_checkpoint(resume);
        fmt::print("resumed {} at step {}\n", resume, trainer.progress().step);
      }
      fmt::print("training {} mod {} ({} train / {} test examples) on {}, {} parameters\n", config.task,
                 trainer.dataset().modulus, trainer.split().train.size(), trainer.split().test.size(),
                 trainer.device().str(), trainer.params().numel());
      trainer.run();
      print_summary(trainer);
    } else if (*eval) {
      TrainConfig config = config_from_checkpoint(eval_checkpoint);
      config.device = eval_device;
      Trainer trainer(config, /*restoring=*/true);
      trainer.load_checkpoint(eval_checkpoint);
      nlohmann::json result = {{"checkpoint", eval_checkpoint}, {"step", trainer.progress().step}};
      auto record = [&](const char* name, const std::vector<std::int64_t>& examples) {
        if (examples.empty()) return;
        const EvalStats e = trainer.evaluate(examples);
        TG_CHECK(std::isfinite(e.loss), "eval {}: the {} loss is {} (the weights are finite, so the logits overflow)",
                 eval_checkpoint, name, e.loss);
        result[name] = {{"loss", e.loss}, {"accuracy", e.accuracy}, {"examples", e.examples}};
      };
      record("train", trainer.split().train);
      record("outer", trainer.split().outer);
      record("test", trainer.split().test);
      std::cout << result.dump(2) << std::endl;
    } else if (*dump) {
      dump_state(dump_config, dump_batch, dump_adam_steps, dump_hvp, dump_out);
      fmt::print("wrote {}\n", dump_out);
    } else {
      for (const ExtraCommand& c : extra_commands) {
        if (*c.command) c.run();
      }
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "\ntapegrok: error: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace tg

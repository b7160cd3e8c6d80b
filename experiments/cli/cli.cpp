#include "experiments/cli/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>

#include "engine/error.h"
#include "experiments/cli/cli_options.h"
#include "experiments/cli/commands.h"
#include "experiments/cli/dump_state.h"
#include "engine/build_info.h"
#include "experiments/cli/train_command.h"
#include "experiments/training/trainer.h"

namespace tg {

int run_cli(int argc, char** argv) {
  CLI::App app{"tapegrok: grokking experiments on a from-scratch autograd engine"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  app.set_version_flag("--version", fmt::format("tapegrok {}{}", build_info().commit,
                                                build_info().dirty ? " (with uncommitted changes)" : ""));

  TrainCommand train(app);  // experiments/cli/train_command.cpp

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
    if (train.chosen()) {
      run_training(train.resolved());
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

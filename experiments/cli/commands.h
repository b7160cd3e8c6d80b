// Subcommands of `tapegrok` defined next to the code they drive (GrokTransfer, NeuralGrok tools...).
// Each registers its options on the app and returns what to run when it was chosen; cli.cpp holds
// the core subcommands (train, eval, dump-state).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace tg {

struct ExtraCommand {
  CLI::App* command = nullptr;
  std::function<void()> run;  // throws tg::Error on failure
};

std::vector<ExtraCommand> register_extra_commands(CLI::App& app);  // experiments/cli/commands.cpp

}  // namespace tg

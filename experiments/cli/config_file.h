// `--config FILE`: settings from a TOML file whose keys are the long flag names (`steps = 3000`,
// `eval-every = 100` or `eval_every = 100`). Flags given on the command line win over the file; a key
// that is not a flag of the subcommand, a value that does not convert, and a missing or unreadable
// file are errors naming the file and the key.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace tg {

// Call after app->parse: sets every option of `command` that the command line did not give from `path`.
void apply_config_file(CLI::App* command, const std::string& path);

}  // namespace tg

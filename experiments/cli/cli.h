// The `tapegrok` command line: subcommands train, eval, dump-state (CLI11), with flags or a config file.
#pragma once

namespace tg {
int run_cli(int argc, char** argv);  // returns the process exit code; never lets an exception escape
}

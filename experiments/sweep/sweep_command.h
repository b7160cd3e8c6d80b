// `tapegrok sweep run | run-one | status | report | list FILE`: grids of training runs, locally or as a
// Slurm job array (docs/sweeps.md).
#pragma once

#include "experiments/cli/commands.h"

namespace tg {
ExtraCommand register_sweep_command(CLI::App& app);
}

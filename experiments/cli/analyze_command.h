// `tapegrok analyze RUN`: the Fourier analysis of a modular-arithmetic run (spectra, key frequencies,
// progress measures over kept checkpoints). The analysis is NumPy code (python/tapegrok/analysis.py);
// this runs it with the Python module of the same build.
#pragma once

#include "experiments/cli/commands.h"

namespace tg {
ExtraCommand register_analyze_command(CLI::App& app);
}

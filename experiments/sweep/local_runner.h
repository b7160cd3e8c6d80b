// `tapegrok sweep run` on this machine: keeps up to `jobs` runs going at once, each with its own BLAS
// threads, skipping finished runs and resuming interrupted ones, with a live line per running run.
#pragma once

#include <vector>

#include "experiments/sweep/sweep_spec.h"

namespace tg {

struct LocalRunOptions {
  int jobs = 0;          // runs at a time; 0: the cores / blas_threads
  int blas_threads = 1;  // OPENBLAS_NUM_THREADS of each run
  bool retry_failed = false;
};

// Returns the process exit code: 0 when every run finished, 1 when some failed, 130 when stopped by
// SIGINT/SIGTERM (the runs then stopped too, and resume next time).
int run_sweep_locally(const SweepSpec& spec, const std::vector<SweepRun>& runs, const LocalRunOptions& options);

// `tapegrok sweep run-one`: one run in the foreground (a Slurm array task). Same exit codes.
int run_one(const SweepRun& run, int blas_threads, bool retry_failed);

}  // namespace tg

// Starts one run of a sweep as a child `tapegrok train` process (fresh, or resumed from its
// checkpoint) with its output appended to RUN/train.log, and classifies how it ended. The local runner
// keeps several of these going; a Slurm array task runs one.
#pragma once

#include <sys/types.h>

#include <string>

#include "experiments/sweep/sweep_spec.h"

namespace tg {

struct LaunchedRun {
  pid_t pid = -1;
  bool resumed = false;
};

// `blas_threads` goes to the child as OPENBLAS_NUM_THREADS. Clears leftovers of a run that never
// checkpointed (so `train` accepts the directory) and any failure record.
LaunchedRun launch_run(const SweepRun& run, int blas_threads);

// After waitpid: records a failure (sweep_failure.json) unless the run exited 0 or was stopped by
// the sweep itself (`interrupted_by_us`). Returns the failure reason, empty on success.
std::string settle_run(const SweepRun& run, int wait_status, bool interrupted_by_us);

// The tapegrok binary running now (the child runs the same one).
std::string self_executable();

}  // namespace tg

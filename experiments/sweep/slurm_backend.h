// `tapegrok sweep run --backend slurm`: one `sbatch --array` script whose array index selects the run
// (`tapegrok sweep run-one`), submitted with sbatch; and what squeue says about submitted runs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "experiments/sweep/sweep_spec.h"

namespace tg {

struct SlurmSubmitOptions {
  SlurmSettings settings;  // the sweep file's [slurm], with command-line flags over it
  bool retry_failed = false;
  bool dry_run = false;    // write the script, do not submit it
};

// Writes RUNS/slurm/sweep.sbatch for the runs still to do (not finished, not queued or running in a
// job this sweep submitted, failed ones only with retry_failed), submits it, and records the job id
// in RUNS/slurm/jobs.json. Returns the process exit code.
int submit_sweep_to_slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs, const SlurmSubmitOptions& options);

// Run index -> squeue state (PENDING, RUNNING, COMPLETED, TIMEOUT, ...) of the array tasks of this
// sweep's submitted jobs that slurmctld still remembers. Empty when squeue is not installed.
std::map<std::size_t, std::string> slurm_states(const SweepSpec& spec);
// Whether a task in this state is still Slurm's (queued or running), so not to be submitted again.
bool slurm_holds(const std::string& state);

// "0-3,7,9-11" for sorted indices.
std::string array_ranges(const std::vector<std::size_t>& sorted_indices);

}  // namespace tg

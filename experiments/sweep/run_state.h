// What a sweep's run is doing, read from the files it leaves in its run directory (so the local runner,
// `sweep status` and a Slurm job all agree, whoever started the run).
#pragma once

#include <optional>
#include <string>

#include "experiments/sweep/sweep_spec.h"

namespace tg {

enum class RunPhase {
  pending,      // nothing run yet
  running,      // a tapegrok process holds the run directory's lock
  interrupted,  // a checkpoint, but not finished: the next `sweep run` resumes it
  finished,     // summary.json says it reached its stop accuracy or its step budget
  failed,       // the process exited with an error (sweep_failure.json says which)
};
const char* run_phase_name(RunPhase phase);

struct RunStatus {
  RunPhase phase = RunPhase::pending;
  std::int64_t step = 0;       // the last logged step (0: none)
  double test_acc = -1.0;      // at that step (-1: none)
  std::string failure;         // for failed runs: the error, one line
};

// Inspects run.run_dir. Does not take the lock (it only probes it) and changes nothing.
RunStatus inspect_run(const SweepRun& run);

// The failure record of a run whose process did not exit cleanly, and its removal (--retry-failed).
void record_failure(const SweepRun& run, const std::string& reason, const std::string& log_tail);
void clear_failure(const SweepRun& run);

// The file the sweep sends a run's output to (appended to across resumes).
std::string run_log_path(const SweepRun& run);
// The run's checkpoint, if it has one.
std::optional<std::string> run_checkpoint(const SweepRun& run);

// The last complete line of a metrics.jsonl (empty if none), read from its end.
std::string last_metrics_line(const std::string& path);
// The last `lines` lines of a text file (for failure messages).
std::string tail_of_file(const std::string& path, std::size_t lines);

}  // namespace tg

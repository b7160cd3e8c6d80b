// A sweep: a grid of training runs (axes x seeds), each run a set of `tapegrok train` flags, read from
// a TOML or JSON file (docs/sweeps.md has the format). Expanding it gives every run its stable index
// (the Slurm array index), its cell's labels and its own run directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "experiments/training/train_config.h"

namespace tg {

// One flag as `tapegrok train` takes it: "--name" and, unless it is a switch, its value.
struct TrainFlag {
  std::string name;   // without the dashes, e.g. "grad-normalize"
  std::string value;  // empty for a switch that is on
  bool is_switch = false;
};

// One value of an axis: a label and the flags it sets.
struct AxisValue {
  std::string label;
  std::vector<TrainFlag> flags;
};

struct SweepAxis {
  std::string name;  // a train flag (values are that flag's values) or any word (values are tables)
  std::vector<AxisValue> values;
};

struct SlurmSettings {
  std::string partition, time, mem;
  std::int64_t cpus_per_task = 1;
  std::int64_t max_parallel = 0;          // the array's %N throttle; 0: none
  std::vector<std::string> extra_lines;   // more "#SBATCH ..." lines, as written
};

struct SweepSpec {
  std::string file;  // where it was read from (for messages)
  std::string name;
  std::string runs_dir;  // the runs go to runs_dir/<labels...>/seed<k>
  std::vector<TrainFlag> base;
  std::vector<SweepAxis> axes;
  std::vector<std::uint64_t> seeds;
  SlurmSettings slurm;
};

// One run of the expanded sweep.
struct SweepRun {
  std::size_t index = 0;            // seeds outermost, then the axes in file order: seed 0 of every
                                    // cell comes first, so a partial sweep covers every cell
  std::vector<std::string> labels;  // one per axis
  std::uint64_t seed = 0;
  std::string cell;                 // "label1/label2"
  std::string name;                 // "label1/label2/seed3"
  std::string run_dir;
  std::vector<std::string> train_args;  // the flags for `tapegrok train`, incl. --seed and --run-dir
  TrainConfig config;                   // what those flags parse to
};

// Reads and checks a sweep file (.toml or .json). Errors name the file and the key, and for flags
// the run whose flags `tapegrok train` rejects. `runs_dir_override` (non-empty) replaces `runs`.
SweepSpec read_sweep_file(const std::string& path, const std::string& runs_dir_override = "");

// Every run of the sweep, in index order; checks each run's flags as `tapegrok train` would, and that
// no two runs share a directory.
std::vector<SweepRun> expand_sweep(const SweepSpec& spec);

// A label as a path component: '*' -> 'x' (a*b -> axb), other characters outside [A-Za-z0-9._+=-] -> '_'.
std::string label_path(const std::string& label);

}  // namespace tg

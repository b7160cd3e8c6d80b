// `tapegrok sweep report`: per cell of the grid, over its seeds, how many reached 95% (99%) test
// accuracy and when (median and interquartile range, with seeds that never reached it counted as
// censored at their last step, not dropped), and the median test/train accuracy curve with its 25-75%
// band. Writes report.md, cells.csv, runs.csv and curves.csv; experiments/plot_sweep.py draws the curves.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "experiments/sweep/sweep_spec.h"

namespace tg {

// A time-to-event sample: a step at which the threshold was reached, or a step after which the run
// ended without reaching it (censored).
struct TimeToThreshold {
  double step = 0.0;
  bool reached = false;
};

// The q-quantile (0 < q < 1) of the time to reach the threshold, from the Kaplan-Meier estimate of its
// distribution: the first step at which the estimated fraction reached is >= q. nullopt when the estimate
// never gets there (too many censored seeds): the quantile is then past the last step observed. With every
// seed run to the same budget this is the plain empirical quantile (the inverse of the sample CDF).
std::optional<double> censored_quantile(std::vector<TimeToThreshold> sample, double q);

// Linear-interpolation quantile of plain values (numpy's default), for accuracy bands.
double quantile(std::vector<double> values, double q);

// Writes the report into `out_dir` (default RUNS/report) and prints the Markdown table. Returns the
// directory written.
std::string write_sweep_report(const SweepSpec& spec, const std::vector<SweepRun>& runs, std::string out_dir);

}  // namespace tg

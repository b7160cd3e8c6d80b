#include "experiments/sweep/sweep_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "experiments/sweep/run_state.h"

namespace tg {

namespace fs = std::filesystem;

std::optional<double> censored_quantile(std::vector<TimeToThreshold> sample, double q) {
  TG_CHECK(q > 0.0 && q < 1.0, "censored_quantile: q = {} must lie in (0, 1)", q);
  // At equal steps an event counts before a censoring (the censored run was still at risk then).
  std::sort(sample.begin(), sample.end(), [](const TimeToThreshold& a, const TimeToThreshold& b) {
    return a.step != b.step ? a.step < b.step : a.reached > b.reached;
  });
  double not_reached = 1.0;  // the estimated fraction still below the threshold
  std::size_t at_risk = sample.size();
  for (std::size_t i = 0; i < sample.size();) {
    std::size_t j = i, events = 0;
    for (; j < sample.size() && sample[j].step == sample[i].step; ++j) events += sample[j].reached ? 1 : 0;
    if (events > 0) {
      not_reached *= 1.0 - static_cast<double>(events) / static_cast<double>(at_risk);
      if (1.0 - not_reached >= q - 1e-12) return sample[i].step;
    }
    at_risk -= j - i;
    i = j;
  }
  return std::nullopt;
}

double quantile(std::vector<double> values, double q) {
  TG_CHECK(!values.empty(), "quantile of no values");
  std::sort(values.begin(), values.end());
  const double position = q * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - static_cast<double>(below)) * (values[above] - values[below]);
}

namespace {

struct RunResult {
  const SweepRun* run = nullptr;
  TimeToThreshold to95, to99;
  std::int64_t last_step = 0;
  double final_test_acc = 0.0, wall_seconds = 0.0;
  std::string build;                // the commit of the binary that ran it (config.json runtime.build)
  std::vector<std::int64_t> steps;  // the evaluation curve
  std::vector<double> test_acc, train_acc;
};

// "COMMIT", "COMMIT (modified)", or "not recorded" for a run whose binary predates the record.
std::string build_of(const std::string& run_dir) {
  std::ifstream in(run_dir + "/config.json");
  if (!in) return "not recorded";
  try {
    const nlohmann::json runtime = nlohmann::json::parse(in).value("runtime", nlohmann::json::object());
    if (!runtime.contains("build")) return "not recorded";
    const nlohmann::json& build = runtime.at("build");
    return build.at("commit").get<std::string>() + (build.value("dirty", false) ? " (modified)" : "");
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}/config.json: {}", run_dir, e.what()));
  }
}

RunResult read_result(const SweepRun& run) {
  RunResult r;
  r.run = &run;
  r.build = build_of(run.run_dir);
  std::ifstream summary_in(run.run_dir + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_in);
  r.last_step = summary.at("step").get<std::int64_t>();
  r.final_test_acc = summary.at("last_test_acc").get<double>();
  r.wall_seconds = summary.at("wall_seconds").get<double>();
  auto threshold = [&](const char* key) {
    const std::int64_t first = summary.at(key).get<std::int64_t>();
    return first >= 0 ? TimeToThreshold{static_cast<double>(first), true}
                      : TimeToThreshold{static_cast<double>(r.last_step), false};
  };
  r.to95 = threshold("first_test_95");
  r.to99 = threshold("first_test_99");
  std::ifstream metrics(run.run_dir + "/metrics.jsonl");
  std::size_t line_number = 0;
  for (std::string line; std::getline(metrics, line);) {
    ++line_number;
    try {
      const nlohmann::json record = nlohmann::json::parse(line);
      if (!record.contains("test_acc")) continue;
      r.steps.push_back(record.at("step").get<std::int64_t>());
      r.test_acc.push_back(record.at("test_acc").get<double>());
      r.train_acc.push_back(record.value("train_acc", std::nan("")));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}/metrics.jsonl, line {}: {}", run.run_dir, line_number, e.what()));
    }
  }
  return r;
}

std::string step_text(const std::optional<double>& step, double censored_after) {
  return step ? fmt::format("{:.0f}", *step) : fmt::format("> {:.0f}", censored_after);
}

struct CellSummary {
  std::string cell;
  std::vector<std::string> labels;
  std::size_t seeds = 0, finished = 0, reached95 = 0, reached99 = 0;
  std::optional<double> median95, q25_95, q75_95, median99, q25_99, q75_99;
  double longest = 0.0;  // the largest censoring step, for "> N"
  double median_wall = 0.0;

  std::string steps95() const { return spread(median95, q25_95, q75_95); }
  std::string steps99() const { return spread(median99, q25_99, q75_99); }

 private:
  std::string spread(const std::optional<double>& m, const std::optional<double>& lo,
                     const std::optional<double>& hi) const {
    if (finished == 0) return "—";
    return fmt::format("{} [{}, {}]", step_text(m, longest), step_text(lo, longest), step_text(hi, longest));
  }
};

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string optional_csv(const std::optional<double>& v) { return v ? fmt::format("{:.0f}", *v) : ""; }

}  // namespace

std::string write_sweep_report(const SweepSpec& spec, const std::vector<SweepRun>& runs, std::string out_dir) {
  if (out_dir.empty()) out_dir = spec.runs_dir + "/report";
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  TG_CHECK(!ec, "cannot create {}: {}", out_dir, ec.message());

  // Cells in grid order, each with its finished runs.
  std::vector<std::string> cell_order;
  std::map<std::string, std::vector<const SweepRun*>> cell_runs;
  std::map<std::string, std::vector<RunResult>> cell_results;
  std::size_t unfinished = 0;
  for (const SweepRun& run : runs) {
    if (!cell_runs.count(run.cell)) cell_order.push_back(run.cell);
    cell_runs[run.cell].push_back(&run);
    if (inspect_run(run).phase == RunPhase::finished) {
      cell_results[run.cell].push_back(read_result(run));
    } else {
      ++unfinished;
    }
  }

  std::vector<CellSummary> cells;
  std::string runs_csv = "cell," ;
  for (const SweepAxis& a : spec.axes) runs_csv += csv_field(a.name) + ",";
  // budget: the run's --steps, where an unreached threshold is censored; runs of one sweep may differ.
  runs_csv += "seed,steps_to_95,reached_95,steps_to_99,reached_99,last_step,budget,final_test_acc,wall_seconds,run_dir,"
              "build\n";
  std::map<std::string, std::size_t> builds;  // commit -> finished runs
  std::string curves_csv = "cell,step,runs,test_acc_median,test_acc_q25,test_acc_q75,train_acc_median,"
                           "train_acc_q25,train_acc_q75\n";
  for (const std::string& cell : cell_order) {
    CellSummary c;
    c.cell = cell;
    c.labels = cell_runs[cell].front()->labels;
    c.seeds = cell_runs[cell].size();
    const std::vector<RunResult>& results = cell_results[cell];
    c.finished = results.size();
    std::vector<TimeToThreshold> t95, t99;
    std::vector<double> walls;
    for (const RunResult& r : results) {
      t95.push_back(r.to95);
      t99.push_back(r.to99);
      walls.push_back(r.wall_seconds);
      c.reached95 += r.to95.reached;
      c.reached99 += r.to99.reached;
      c.longest = std::max(c.longest, static_cast<double>(r.last_step));
      runs_csv += csv_field(cell) + ",";
      for (const std::string& l : r.run->labels) runs_csv += csv_field(l) + ",";
      runs_csv += fmt::format("{},{:.0f},{},{:.0f},{},{},{},{},{},{},{}\n", r.run->seed, r.to95.step,
                              r.to95.reached ? 1 : 0, r.to99.step, r.to99.reached ? 1 : 0, r.last_step,
                              r.run->config.max_steps, r.final_test_acc, r.wall_seconds, csv_field(r.run->run_dir),
                              csv_field(r.build));
      ++builds[r.build];
    }
    if (!results.empty()) {
      c.median95 = censored_quantile(t95, 0.5);
      c.q25_95 = censored_quantile(t95, 0.25);
      c.q75_95 = censored_quantile(t95, 0.75);
      c.median99 = censored_quantile(t99, 0.5);
      c.q25_99 = censored_quantile(t99, 0.25);
      c.q75_99 = censored_quantile(t99, 0.75);
      c.median_wall = quantile(walls, 0.5);

      // The curves over seeds: at each evaluated step, every run's latest value (a run that stopped
      // at its threshold keeps its last value), median and quartiles.
      std::vector<std::int64_t> grid;
      for (const RunResult& r : results) grid.insert(grid.end(), r.steps.begin(), r.steps.end());
      std::sort(grid.begin(), grid.end());
      grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
      for (std::int64_t step : grid) {
        std::vector<double> test, train;
        for (const RunResult& r : results) {
          const auto it = std::upper_bound(r.steps.begin(), r.steps.end(), step);
          if (it == r.steps.begin()) continue;
          const std::size_t k = static_cast<std::size_t>(it - r.steps.begin()) - 1;
          test.push_back(r.test_acc[k]);
          train.push_back(r.train_acc[k]);
        }
        if (test.empty()) continue;
        curves_csv += fmt::format("{},{},{},{},{},{},{},{},{}\n", csv_field(cell), step, test.size(),
                                  quantile(test, 0.5), quantile(test, 0.25), quantile(test, 0.75),
                                  quantile(train, 0.5), quantile(train, 0.25), quantile(train, 0.75));
      }
    }
    cells.push_back(std::move(c));
  }

  std::string cells_csv = "cell,";
  for (const SweepAxis& a : spec.axes) cells_csv += csv_field(a.name) + ",";
  cells_csv += "seeds,finished,reached_95,median_95,q25_95,q75_95,reached_99,median_99,q25_99,q75_99,"
               "censored_after,median_wall_seconds\n";
  for (const CellSummary& c : cells) {
    cells_csv += csv_field(c.cell) + ",";
    for (const std::string& l : c.labels) cells_csv += csv_field(l) + ",";
    cells_csv += fmt::format("{},{},{},{},{},{},{},{},{},{},{:.0f},{:.1f}\n", c.seeds, c.finished, c.reached95,
                             optional_csv(c.median95), optional_csv(c.q25_95), optional_csv(c.q75_95), c.reached99,
                             optional_csv(c.median99), optional_csv(c.q25_99), optional_csv(c.q75_99), c.longest,
                             c.median_wall);
  }

  std::string md = fmt::format("# Sweep {}\n\n", spec.name);
  md += fmt::format("{} runs ({} cells x {} seeds), {} finished. Steps to 95% (99%) test accuracy over the "
                    "finished seeds of each cell: median [25th, 75th percentile]; a seed that ended without "
                    "reaching the threshold counts as censored at its last step (Kaplan-Meier), and \"> N\" "
                    "means the quantile lies past the last step run. \"reached\" is seeds that reached it / "
                    "finished seeds.\n\n",
                    runs.size(), cell_order.size(), spec.seeds.size(), runs.size() - unfinished);
  // Builds of different commits may differ in the last bits (docs/architecture.md, "Determinism").
  if (builds.size() == 1) {
    md += fmt::format("Every finished run was made by one build: {}.\n\n", builds.begin()->first);
  } else if (builds.size() > 1) {
    md += fmt::format("**The finished runs come from {} builds**, whose results may differ in the last bits "
                      "(runs.csv says which made each run):", builds.size());
    for (const auto& [build, count] : builds) md += fmt::format(" {} ({} runs);", build, count);
    md.back() = '.';
    md += "\n\n";
  }
  md += "| ";
  for (const SweepAxis& a : spec.axes) md += a.name + " | ";
  md += "reached 95% | steps to 95% | reached 99% | steps to 99% | wall time (median) |\n|";
  for (std::size_t i = 0; i < spec.axes.size() + 5; ++i) md += "---|";
  md += "\n";
  for (const CellSummary& c : cells) {
    md += "| ";
    for (const std::string& l : c.labels) md += l + " | ";
    md += fmt::format("{}/{} | {} | {}/{} | {} | {} |\n", c.reached95, c.finished, c.steps95(), c.reached99,
                      c.finished, c.steps99(), c.finished ? fmt::format("{:.0f} s", c.median_wall) : "—");
  }
  if (spec.axes.size() == 2) {  // the grid as a table: first axis down, second across
    md += fmt::format("\nSteps to 95%, median [IQR] (reached/finished):\n\n| {} |", spec.axes[0].name);
    for (const AxisValue& v : spec.axes[1].values) md += " " + v.label + " |";
    md += "\n|---|";
    for (std::size_t i = 0; i < spec.axes[1].values.size(); ++i) md += "---|";
    md += "\n";
    for (const AxisValue& row : spec.axes[0].values) {
      md += "| " + row.label + " |";
      for (const AxisValue& col : spec.axes[1].values) {
        const auto it = std::find_if(cells.begin(), cells.end(), [&](const CellSummary& c) {
          return c.labels[0] == row.label && c.labels[1] == col.label;
        });
        md += fmt::format(" {} ({}/{}) |", it->steps95(), it->reached95, it->finished);
      }
      md += "\n";
    }
  }

  nlohmann::json meta = {{"name", spec.name}, {"axes", nlohmann::json::array()}, {"cells", cell_order}};
  for (const SweepAxis& a : spec.axes) {
    nlohmann::json labels = nlohmann::json::array();
    for (const AxisValue& v : a.values) labels.push_back(v.label);
    meta["axes"].push_back({{"name", a.name}, {"labels", labels}});
  }
  write_file_atomically(out_dir + "/report.md", md);
  write_file_atomically(out_dir + "/cells.csv", cells_csv);
  write_file_atomically(out_dir + "/runs.csv", runs_csv);
  write_file_atomically(out_dir + "/curves.csv", curves_csv);
  write_file_atomically(out_dir + "/report.json", meta.dump(2) + "\n");
  fmt::print("{}", md);
  return out_dir;
}

}  // namespace tg

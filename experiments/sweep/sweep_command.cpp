#include "experiments/sweep/sweep_command.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "engine/error.h"
#include "experiments/sweep/local_runner.h"
#include "experiments/sweep/run_launcher.h"
#include "experiments/sweep/run_state.h"
#include "experiments/sweep/slurm_backend.h"
#include "experiments/sweep/sweep_report.h"
#include "experiments/sweep/sweep_spec.h"

namespace tg {

namespace {

struct SweepArgs {
  std::string file, runs_dir, backend = "local", out_dir;
  int jobs = 0, blas_threads = 1;
  std::size_t index = 0;
  bool retry_failed = false, dry_run = false, no_figures = false, all = false;
  SlurmSettings slurm;  // flags; the file's [slurm] fills what is not given
  std::vector<std::string> sbatch_lines;
};

void print_status(const SweepSpec& spec, const std::vector<SweepRun>& runs, bool all) {
  const std::map<std::size_t, std::string> queued = slurm_states(spec);
  std::map<std::string, std::size_t> counts;
  std::vector<std::string> details;
  for (const SweepRun& run : runs) {
    const RunStatus s = inspect_run(run);
    std::string phase = run_phase_name(s.phase);
    if (const auto q = queued.find(run.index);
        q != queued.end() && slurm_holds(q->second) && s.phase != RunPhase::running) {
      phase = "queued";  // Slurm holds it (PENDING, or starting)
    }
    ++counts[phase];
    const std::string progress = s.step > 0 ? fmt::format(" at step {}/{}, test {:.1f}%", s.step, run.config.max_steps,
                                                          100 * std::max(0.0, s.test_acc))
                                            : "";
    if (s.phase == RunPhase::failed) {
      details.push_back(fmt::format("  failed      [{}] {}: {} (log: {})", run.index, run.name, s.failure,
                                    run_log_path(run)));
    } else if (all || (s.phase != RunPhase::finished && s.phase != RunPhase::pending)) {
      const std::string slurm = queued.count(run.index) ? " (Slurm: " + queued.at(run.index) + ")" : "";
      details.push_back(fmt::format("  {:<11} [{}] {}{}{}", phase, run.index, run.name, progress, slurm));
    }
  }
  std::string line;
  for (const char* phase : {"finished", "running", "queued", "interrupted", "failed", "pending"}) {
    line += fmt::format("{}{} {}", line.empty() ? "" : ", ", counts[phase], phase);
  }
  fmt::print("sweep {} ({} runs in {}): {}\n", spec.name, runs.size(), spec.runs_dir, line);
  for (const auto& d : details) fmt::print("{}\n", d);
}

void draw_figures(const std::string& report_dir) {
  const std::string script = std::string(TAPEGROK_SOURCE_DIR) + "/experiments/plot_sweep.py";
  const char* configured = std::getenv("TAPEGROK_PYTHON");
  const std::string python = configured != nullptr ? configured
                             : std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3"
                                                                          : "python3";
  std::error_code ec;
  if (!std::filesystem::exists(script, ec)) {
    fmt::print("no figures: {} is not there (the source tree this binary was built from)\n", script);
    return;
  }
  const std::string command = fmt::format("'{}' '{}' '{}'", python, script, report_dir);
  std::fflush(stdout);  // the report's table before the script's lines
  const int rc = std::system(command.c_str());
  if (rc != 0) fmt::print("figures failed (exit {}): {}\n", rc, command);
}

}  // namespace

ExtraCommand register_sweep_command(CLI::App& app) {
  auto args = std::make_shared<SweepArgs>();
  CLI::App* sweep = app.add_subcommand("sweep", "grids of training runs over tasks, methods, settings and seeds");
  sweep->require_subcommand(1);
  auto add_common = [&](CLI::App* cmd) {
    cmd->add_option("file", args->file, "the sweep file (.toml or .json; docs/sweeps.md)")->required();
    cmd->add_option("--runs", args->runs_dir, "where the runs go (default: the file's 'runs', else runs/NAME)");
  };
  CLI::App* run = sweep->add_subcommand("run", "run every unfinished run: locally, or submitted as a Slurm job array");
  add_common(run);
  run->add_option("--backend", args->backend, "local | slurm")
      ->check(CLI::IsMember({"local", "slurm"}))
      ->capture_default_str();
  run->add_option("--jobs", args->jobs, "local: runs at a time (0: the cores / --blas-threads)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  run->add_option("--blas-threads", args->blas_threads, "OpenBLAS threads of each run")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  run->add_flag("--retry-failed", args->retry_failed, "also rerun the runs that failed before");
  run->add_option("--partition", args->slurm.partition, "slurm: partition (default: the file's, else Slurm's)");
  run->add_option("--time", args->slurm.time, "slurm: time limit per run, e.g. 02:00:00");
  run->add_option("--mem", args->slurm.mem, "slurm: memory per run, e.g. 4G");
  run->add_option("--cpus-per-task", args->slurm.cpus_per_task, "slurm: CPUs per run (also its BLAS threads)")
      ->check(CLI::Range(1, 1024));
  run->add_option("--max-parallel", args->slurm.max_parallel, "slurm: at most N array tasks at once")
      ->check(CLI::Range(0, 100000));
  run->add_option("--sbatch-line", args->sbatch_lines, "slurm: another #SBATCH option, e.g. --qos=short");
  run->add_flag("--dry-run", args->dry_run, "slurm: write the job script, do not submit it");

  CLI::App* run_one_cmd = sweep->add_subcommand("run-one", "run one run of the sweep, by index (a Slurm array task)");
  add_common(run_one_cmd);
  run_one_cmd->add_option("--index", args->index, "the run's index (`sweep list` shows them)")->required();
  run_one_cmd->add_option("--blas-threads", args->blas_threads, "OpenBLAS threads")->capture_default_str();
  run_one_cmd->add_flag("--retry-failed", args->retry_failed, "run it even if it failed before");

  CLI::App* status = sweep->add_subcommand("status", "which runs are finished, running, queued, failed or pending");
  add_common(status);
  status->add_flag("--all", args->all, "list every run, not only those under way or failed");

  CLI::App* report = sweep->add_subcommand("report", "steps to 95%/99% per cell over seeds, tables and figures");
  add_common(report);
  report->add_option("--out", args->out_dir, "where the report goes (default: RUNS/report)");
  report->add_flag("--no-figures", args->no_figures, "only the tables (figures need python3 with matplotlib)");

  CLI::App* list = sweep->add_subcommand("list", "every run with its index, directory and train flags");
  add_common(list);

  return {sweep, [=] {
            const SweepSpec spec = read_sweep_file(args->file, args->runs_dir);
            const std::vector<SweepRun> runs = expand_sweep(spec);
            if (*run) {
              if (args->backend == "local") {
                const int rc = run_sweep_locally(spec, runs, {args->jobs, args->blas_threads, args->retry_failed});
                if (rc != 0) std::exit(rc);
                return;
              }
              SlurmSubmitOptions options;
              options.settings = spec.slurm;
              const SlurmSettings& given = args->slurm;
              if (!given.partition.empty()) options.settings.partition = given.partition;
              if (!given.time.empty()) options.settings.time = given.time;
              if (!given.mem.empty()) options.settings.mem = given.mem;
              if (run->get_option("--cpus-per-task")->count()) options.settings.cpus_per_task = given.cpus_per_task;
              if (run->get_option("--max-parallel")->count()) options.settings.max_parallel = given.max_parallel;
              for (const auto& l : args->sbatch_lines) options.settings.extra_lines.push_back(l);
              options.retry_failed = args->retry_failed;
              options.dry_run = args->dry_run;
              const int rc = submit_sweep_to_slurm(spec, runs, options);
              if (rc != 0) std::exit(rc);
            } else if (*run_one_cmd) {
              TG_CHECK(args->index < runs.size(), "sweep {}: --index {} is past its last run ({})", spec.file,
                       args->index, runs.size() - 1);
              const int rc = run_one(runs[args->index], args->blas_threads, args->retry_failed);
              if (rc != 0) std::exit(rc);
            } else if (*status) {
              print_status(spec, runs, args->all);
            } else if (*report) {
              const std::string dir = write_sweep_report(spec, runs, args->out_dir);
              if (!args->no_figures) draw_figures(dir);
              fmt::print("report in {}/ (report.md, cells.csv, runs.csv, curves.csv{})\n", dir,
                         args->no_figures ? "" : ", curves_*.png");
            } else if (*list) {
              for (const SweepRun& r : runs) {
                std::string flags;
                for (const auto& a : r.train_args) flags += " " + a;
                fmt::print("[{}] {}: tapegrok train{}\n", r.index, r.name, flags);
              }
            }
          }};
}

}  // namespace tg

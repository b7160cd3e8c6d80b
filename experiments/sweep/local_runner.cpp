#include "experiments/sweep/local_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <fmt/format.h>
#include <map>
#include <thread>

#include "engine/error.h"
#include "experiments/sweep/run_launcher.h"
#include "experiments/sweep/run_state.h"

namespace tg {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGINT/SIGTERM handlers for the lifetime of the object (the runs are stopped, not orphaned).
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string duration_text(double seconds) {
  const auto s = static_cast<std::int64_t>(seconds);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

struct Active {
  const SweepRun* run;
  Clock::time_point started;
  std::int64_t first_step = -1;  // the step it had when it started (resumed runs), to measure its rate
};

// The live display: on a terminal, a block of lines redrawn in place (a header, then one line per
// running run); elsewhere (a log file, CI), one line per event and a summary line every minute.
class SweepDisplay {
 public:
  explicit SweepDisplay(std::string name) : name_(std::move(name)), tty_(::isatty(STDOUT_FILENO) == 1) {}

  void event(const std::string& line) {
    clear();
    fmt::print("{}\n", line);
    std::fflush(stdout);
  }

  void refresh(const std::string& header, const std::vector<std::string>& lines, bool force = false) {
    const auto now = Clock::now();
    if (!tty_) {
      if (!force && now - last_plain_ < std::chrono::seconds(60)) return;
      last_plain_ = now;
      fmt::print("{}\n", header);
      std::fflush(stdout);
      return;
    }
    clear();
    fmt::print("{}\n", header);
    for (const auto& l : lines) fmt::print("{}\n", l);
    drawn_ = lines.size() + 1;
    std::fflush(stdout);
  }

 private:
  void clear() {
    if (!tty_) return;
    for (std::size_t i = 0; i < drawn_; ++i) fmt::print("\x1b[1A\x1b[2K");  // up one line, erase it
    drawn_ = 0;
  }

  std::string name_;
  bool tty_;
  std::size_t drawn_ = 0;
  Clock::time_point last_plain_{};
};

}  // namespace

int run_sweep_locally(const SweepSpec& spec, const std::vector<SweepRun>& runs, const LocalRunOptions& options) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int jobs = options.jobs > 0 ? options.jobs : std::max(1, cores / std::max(1, options.blas_threads));

  std::deque<const SweepRun*> queue;
  std::size_t finished = 0, failed = 0, busy_elsewhere = 0;
  std::int64_t steps_left = 0;  // the budget still to run, an upper bound (runs may stop early)
  for (const SweepRun& run : runs) {
    const RunStatus status = inspect_run(run);
    switch (status.phase) {
      case RunPhase::finished: ++finished; break;
      case RunPhase::running: ++busy_elsewhere; break;  // another process (a Slurm job, another sweep run)
      case RunPhase::failed:
        if (!options.retry_failed) {
          ++failed;
          break;
        }
        [[fallthrough]];
      case RunPhase::pending:
      case RunPhase::interrupted:
        queue.push_back(&run);
        steps_left += std::max<std::int64_t>(0, run.config.max_steps - status.step);
        break;
    }
  }
  SweepDisplay display(spec.name);
  display.event(fmt::format("sweep {}: {} runs in {}: {} finished, {} failed (not retried{}), {} running elsewhere, "
                            "{} to run, {} at a time with {} BLAS thread(s) each",
                            spec.name, runs.size(), spec.runs_dir, finished, failed,
                            options.retry_failed ? "" : "; --retry-failed retries them", busy_elsewhere, queue.size(),
                            jobs, options.blas_threads));
  const std::size_t failed_before = failed;

  StopSignals signals;
  std::map<pid_t, Active> active;
  const auto started = Clock::now();
  std::int64_t steps_done = 0;  // by runs that ended in this invocation
  while (!queue.empty() || !active.empty()) {
    while (g_stop_signal == 0 && !queue.empty() && static_cast<int>(active.size()) < jobs) {
      const SweepRun* run = queue.front();
      queue.pop_front();
      try {
        const LaunchedRun launched = launch_run(*run, options.blas_threads);
        active[launched.pid] = {run, Clock::now(), inspect_run(*run).step};
        display.event(fmt::format("  start  {}{}", run->name, launched.resumed ? " (resuming its checkpoint)" : ""));
      } catch (const Error& e) {
        ++failed;
        display.event(fmt::format("  FAILED {}: {}", run->name, e.what()));
      }
    }
    if (g_stop_signal != 0) {
      for (const auto& [pid, a] : active) ::kill(pid, SIGTERM);
      queue.clear();
    }

    int wait_status = 0;
    const pid_t pid = ::waitpid(-1, &wait_status, WNOHANG);
    if (pid > 0 && active.count(pid)) {
      const Active a = active[pid];
      active.erase(pid);
      const std::string reason = settle_run(*a.run, wait_status, g_stop_signal != 0);
      const RunStatus status = inspect_run(*a.run);
      steps_done += std::max<std::int64_t>(0, status.step - std::max<std::int64_t>(0, a.first_step));
      steps_left -= std::max<std::int64_t>(0, a.run->config.max_steps - std::max<std::int64_t>(0, a.first_step));
      const double seconds = std::chrono::duration<double>(Clock::now() - a.started).count();
      if (reason.empty()) {
        ++finished;
        display.event(fmt::format("  done   {}: step {}, test accuracy {:.1f}%, {}", a.run->name, status.step,
                                  100 * status.test_acc, duration_text(seconds)));
      } else if (g_stop_signal != 0) {
        display.event(fmt::format("  stopped {} at step {} (resumes from its checkpoint next time)", a.run->name,
                                  status.step));
      } else {
        ++failed;
        display.event(fmt::format("  FAILED {} after {}: {} (log: {})", a.run->name, duration_text(seconds), reason,
                                  run_log_path(*a.run)));
      }
      continue;
    }

    // The live lines, and an estimate of the time left from the steps run so far.
    std::vector<std::string> lines;
    std::int64_t steps_now = steps_done, steps_left_now = steps_left;
    for (const auto& [p, a] : active) {
      const RunStatus s = inspect_run(*a.run);
      const std::int64_t ran = std::max<std::int64_t>(0, s.step - std::max<std::int64_t>(0, a.first_step));
      steps_now += ran;
      steps_left_now -= ran;
      lines.push_back(fmt::format("    {:<40} step {:>6}/{:<6} test {:5.1f}%  {}", a.run->name, s.step,
                                  a.run->config.max_steps, s.test_acc < 0 ? 0.0 : 100 * s.test_acc,
                                  duration_text(std::chrono::duration<double>(Clock::now() - a.started).count())));
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    const std::string eta = steps_now > 0 && elapsed > 0
                                ? "at most " + duration_text(static_cast<double>(steps_left_now) * elapsed / steps_now)
                                : "after the first steps";
    display.refresh(fmt::format("sweep {}: {}/{} finished, {} running, {} failed, {} waiting; {} elapsed, time left {}",
                                spec.name, finished, runs.size(), active.size(), failed, queue.size(),
                                duration_text(elapsed), eta),
                    lines);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (g_stop_signal != 0) {
    display.event(fmt::format("sweep {}: stopped by signal {}; `tapegrok sweep run {}` resumes it", spec.name,
                              g_stop_signal.load(), spec.file));
    return 130;
  }
  display.event(fmt::format("sweep {}: {}/{} runs finished, {} failed ({} in this invocation)", spec.name, finished,
                            runs.size(), failed, failed - failed_before));
  return failed > 0 ? 1 : 0;
}

int run_one(const SweepRun& run, int blas_threads, bool retry_failed) {
  const RunStatus status = inspect_run(run);
  if (status.phase == RunPhase::finished) {
    fmt::print("{}: already finished (step {})\n", run.name, status.step);
    return 0;
  }
  TG_CHECK(status.phase != RunPhase::running, "{}: another process is running it ({} is locked)", run.name,
           run.run_dir);
  if (status.phase == RunPhase::failed && !retry_failed) {
    fmt::print("{}: failed before ({}); not retried without --retry-failed\n", run.name, status.failure);
    return 1;
  }
  StopSignals signals;
  const LaunchedRun launched = launch_run(run, blas_threads);
  fmt::print("{}: running in {} (output: {}){}\n", run.name, run.run_dir, run_log_path(run),
             launched.resumed ? ", resuming its checkpoint" : "");
  std::fflush(stdout);
  int wait_status = 0;
  bool forwarded = false;
  while (::waitpid(launched.pid, &wait_status, 0) < 0) {
    TG_CHECK(errno == EINTR, "{}: waitpid: {}", run.name, std::strerror(errno));
    if (g_stop_signal != 0 && !forwarded) {  // a Slurm time limit or scancel: stop the run, keep its checkpoint
      ::kill(launched.pid, SIGTERM);
      forwarded = true;
    }
  }
  const std::string reason = settle_run(run, wait_status, g_stop_signal != 0);
  if (g_stop_signal != 0) {
    fmt::print("{}: stopped by signal {}; it resumes from its checkpoint next time\n", run.name, g_stop_signal.load());
    return 130;
  }
  if (!reason.empty()) {
    fmt::print("{}: FAILED: {}\n", run.name, reason);
    return 1;
  }
  fmt::print("{}: finished at step {}\n", run.name, inspect_run(run).step);
  return 0;
}

}  // namespace tg

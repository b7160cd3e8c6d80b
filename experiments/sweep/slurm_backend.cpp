#include "experiments/sweep/slurm_backend.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "experiments/sweep/run_launcher.h"
#include "experiments/sweep/run_state.h"

extern char** environ;

namespace tg {

namespace fs = std::filesystem;

namespace {

struct CommandResult {
  int exit_code = -1;  // -1: could not be started (not installed)
  std::string output;  // stdout and stderr together
};

// Runs a program found on PATH and collects what it prints.
CommandResult run_command(const std::vector<std::string>& args) {
  int pipe_fds[2];
  TG_CHECK(::pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe: {}", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  CommandResult result;
  if (err != 0) {
    ::close(pipe_fds[0]);
    result.output = std::strerror(err);
    return result;
  }
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    result.output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string jobs_file(const SweepSpec& spec) { return spec.runs_dir + "/slurm/jobs.json"; }

nlohmann::json read_jobs(const SweepSpec& spec) {
  std::ifstream in(jobs_file(spec));
  if (!in) return nlohmann::json::array();
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: {} (the sweep's record of its Slurm jobs)", jobs_file(spec), e.what()));
  }
}

// A value for an #SBATCH line: one line, no shell-active characters needed.
std::string checked_sbatch_value(const std::string& what, const std::string& value) {
  TG_CHECK(value.find('\n') == std::string::npos, "slurm {}: '{}' spans lines", what, value);
  return value;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string array_ranges(const std::vector<std::size_t>& sorted) {
  std::string out;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? std::to_string(sorted[i]) : fmt::format("{}-{}", sorted[i], sorted[j]);
    i = j + 1;
  }
  return out;
}

std::map<std::size_t, std::string> slurm_states(const SweepSpec& spec) {
  std::map<std::size_t, std::string> states;
  for (const nlohmann::json& job : read_jobs(spec)) {
    const std::string id = job.value("job", "");
    if (id.empty()) continue;
    // -r: one line per array task ("123_4 PENDING"); -t all: also those that ended while slurmctld
    // still remembers them (COMPLETED, FAILED, TIMEOUT...). A job it has forgotten is an error, skipped.
    const CommandResult r = run_command({"squeue", "-h", "-r", "-t", "all", "-j", id, "-o", "%i %T"});
    if (r.exit_code == -1) return {};  // no squeue here
    if (r.exit_code != 0) continue;
    std::istringstream lines(r.output);
    for (std::string task, state; lines >> task >> state;) {
      const std::size_t underscore = task.find('_');
      if (underscore == std::string::npos || task.substr(0, underscore) != id) continue;
      try {
        states[std::stoul(task.substr(underscore + 1))] = state;
      } catch (const std::exception&) {
      }
    }
  }
  return states;
}

bool slurm_holds(const std::string& state) {
  return state == "PENDING" || state == "CONFIGURING" || state == "RUNNING" || state == "COMPLETING" ||
         state == "SUSPENDED" || state == "REQUEUED" || state == "RESIZING" || state == "SIGNALING" ||
         state == "STAGE_OUT";
}

int submit_sweep_to_slurm(const SweepSpec& spec, const std::vector<SweepRun>& runs, const SlurmSubmitOptions& options) {
  const std::map<std::size_t, std::string> queued = slurm_states(spec);
  std::vector<std::size_t> indices;
  std::size_t finished = 0, failed = 0, in_queue = 0;
  for (const SweepRun& run : runs) {
    const RunStatus status = inspect_run(run);
    if (status.phase == RunPhase::finished) {
      ++finished;
    } else if ((queued.count(run.index) && slurm_holds(queued.at(run.index))) || status.phase == RunPhase::running) {
      ++in_queue;
    } else if (status.phase == RunPhase::failed && !options.retry_failed) {
      ++failed;
    } else {
      indices.push_back(run.index);
    }
  }
  fmt::print("sweep {}: {} runs: {} finished, {} queued or running, {} failed (not retried{}), {} to submit\n",
             spec.name, runs.size(), finished, in_queue, failed, options.retry_failed ? "" : "; --retry-failed retries them",
             indices.size());
  if (indices.empty()) return failed > 0 ? 1 : 0;

  const fs::path slurm_dir = fs::absolute(fs::path(spec.runs_dir) / "slurm");
  std::error_code ec;
  fs::create_directories(slurm_dir, ec);
  TG_CHECK(!ec, "cannot create {}: {}", slurm_dir.string(), ec.message());
  const SlurmSettings& s = options.settings;
  std::string script = "#!/bin/bash\n";
  script += fmt::format("# tapegrok sweep {} ({}): one run per array task, selected by its index. Written by\n"
                        "# `tapegrok sweep run --backend slurm`; `tapegrok sweep status` reads the runs' files.\n",
                        spec.name, fs::absolute(spec.file).string());
  script += fmt::format("#SBATCH --job-name=tapegrok-{}\n", spec.name);
  script += fmt::format("#SBATCH --array={}{}\n", array_ranges(indices),
                        s.max_parallel > 0 ? fmt::format("%{}", s.max_parallel) : "");
  script += fmt::format("#SBATCH --cpus-per-task={}\n", s.cpus_per_task);
  script += fmt::format("#SBATCH --output={}/%A_%a.out\n", slurm_dir.string());
  if (!s.partition.empty()) script += "#SBATCH --partition=" + checked_sbatch_value("partition", s.partition) + "\n";
  if (!s.time.empty()) script += "#SBATCH --time=" + checked_sbatch_value("time", s.time) + "\n";
  if (!s.mem.empty()) script += "#SBATCH --mem=" + checked_sbatch_value("mem", s.mem) + "\n";
  for (const std::string& line : s.extra_lines) {
    script += "#SBATCH " + checked_sbatch_value("extra line", line) + "\n";
  }
  script += fmt::format("cd {}\n", shell_quote(fs::current_path().string()));
  script += fmt::format("exec {} sweep run-one {} --runs {} --index \"$SLURM_ARRAY_TASK_ID\" "
                        "--blas-threads \"${{SLURM_CPUS_PER_TASK:-1}}\"{}\n",
                        shell_quote(self_executable()), shell_quote(fs::absolute(spec.file).string()),
                        shell_quote(spec.runs_dir), options.retry_failed ? " --retry-failed" : "");
  const std::string script_path = (slurm_dir / "sweep.sbatch").string();
  write_file_atomically(script_path, script);
  if (options.dry_run) {
    fmt::print("wrote {} (not submitted: --dry-run)\n", script_path);
    return 0;
  }
  if (options.retry_failed) {
    for (const SweepRun& run : runs) clear_failure(run);
  }

  const CommandResult r = run_command({"sbatch", "--parsable", script_path});
  TG_CHECK(r.exit_code != -1, "sbatch: cannot run it ({}); is Slurm installed? The script is {}", r.output,
           script_path);
  TG_CHECK(r.exit_code == 0, "sbatch {} failed (exit code {}): {}", script_path, r.exit_code, r.output);
  std::string job = r.output.substr(0, r.output.find_first_of(";\n"));  // "123" or "123;cluster"
  TG_CHECK(!job.empty() && job.find_first_not_of("0123456789") == std::string::npos,
           "sbatch {}: unexpected answer '{}'", script_path, r.output);
  nlohmann::json jobs = read_jobs(spec);
  jobs.push_back({{"job", job},
                  {"array", array_ranges(indices)},
                  {"submitted_unix", std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count()}});
  write_file_atomically(jobs_file(spec), jobs.dump(2) + "\n");
  fmt::print("submitted job {} (array {}, script {}); `tapegrok sweep status {}` follows it\n", job,
             array_ranges(indices), script_path, spec.file);
  return 0;
}

}  // namespace tg

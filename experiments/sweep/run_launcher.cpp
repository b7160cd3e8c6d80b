#include "experiments/sweep/run_launcher.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "engine/error.h"
#include "experiments/sweep/run_state.h"

extern char** environ;

namespace tg {

namespace fs = std::filesystem;

std::string self_executable() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  TG_CHECK(!ec, "cannot find the tapegrok binary (/proc/self/exe): {}", ec.message());
  return exe.string();
}

LaunchedRun launch_run(const SweepRun& run, int blas_threads) {
  std::error_code ec;
  fs::create_directories(run.run_dir, ec);
  TG_CHECK(!ec, "run {}: cannot create {}: {}", run.name, run.run_dir, ec.message());
  clear_failure(run);

  LaunchedRun launched;
  std::vector<std::string> args = {self_executable(), "train"};
  args.insert(args.end(), run.train_args.begin(), run.train_args.end());
  args.push_back("--no-progress");
  if (const auto checkpoint = run_checkpoint(run)) {
    args.insert(args.end(), {"--resume", *checkpoint});
    launched.resumed = true;
  } else {
    // Files of an attempt that died before its first checkpoint hold nothing to resume from.
    for (const char* name : {"metrics.jsonl", "config.json", "summary.json", "amplifier.safetensors"}) {
      fs::remove(fs::path(run.run_dir) / name, ec);
    }
  }

  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "OPENBLAS_NUM_THREADS=", 21) != 0) env_text.emplace_back(*e);
  }
  env_text.push_back(fmt::format("OPENBLAS_NUM_THREADS={}", blas_threads));
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  const std::string log = run_log_path(run);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  const int err = ::posix_spawn(&launched.pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  TG_CHECK(err == 0, "run {}: cannot start {}: {}", run.name, argv[0], std::strerror(err));
  return launched;
}

std::string settle_run(const SweepRun& run, int wait_status, bool interrupted_by_us) {
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) return "";
  std::string reason;
  const std::string tail = tail_of_file(run_log_path(run), 20);
  if (WIFSIGNALED(wait_status)) {
    reason = fmt::format("killed by signal {} ({})", WTERMSIG(wait_status), ::strsignal(WTERMSIG(wait_status)));
  } else {
    // The engine's own message is the log's "tapegrok: error: ..." line.
    const std::size_t at = tail.rfind("tapegrok: error: ");
    reason = at == std::string::npos ? fmt::format("exit code {}", WEXITSTATUS(wait_status))
                                     : tail.substr(at + 17, tail.find('\n', at) - at - 17);
  }
  if (!interrupted_by_us) record_failure(run, reason, tail);
  return reason;
}

}  // namespace tg

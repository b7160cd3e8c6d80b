#include "experiments/sweep/run_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace tg {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFailureFile = "sweep_failure.json";

// True while another process holds the run directory's lock (experiments/training/run_directory.h).
bool lock_is_held(const std::string& dir) {
  const std::string lock = dir + "/.lock";
  const int fd = ::open(lock.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the probe's shared lock at once
  return held;
}

std::optional<nlohmann::json> read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // being rewritten or damaged: treated as absent
  }
}

}  // namespace

const char* run_phase_name(RunPhase phase) {
  switch (phase) {
    case RunPhase::pending: return "pending";
    case RunPhase::running: return "running";
    case RunPhase::interrupted: return "interrupted";
    case RunPhase::finished: return "finished";
    case RunPhase::failed: return "failed";
  }
  return "?";
}

std::string run_log_path(const SweepRun& run) { return run.run_dir + "/train.log"; }

std::optional<std::string> run_checkpoint(const SweepRun& run) {
  const std::string path = run.run_dir + "/checkpoint.safetensors";
  std::error_code ec;
  return fs::is_regular_file(path, ec) ? std::optional(path) : std::nullopt;
}

std::string last_metrics_line(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - (1 << 20));  // a record is < 1 MiB
  in.seekg(start);
  std::string text(static_cast<std::size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  const std::size_t end = text.rfind('\n');  // a line still being written has no newline yet
  if (end == std::string::npos) return "";
  const std::string_view complete(text.data(), end);
  const std::size_t begin = complete.rfind('\n');
  return std::string(complete.substr(begin == std::string_view::npos ? 0 : begin + 1));
}

std::string tail_of_file(const std::string& path, std::size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(line);
    if (last.size() > lines) last.erase(last.begin());
  }
  std::string out;
  for (const auto& l : last) out += l + "\n";
  return out;
}

RunStatus inspect_run(const SweepRun& run) {
  RunStatus status;
  if (const std::string line = last_metrics_line(run.run_dir + "/metrics.jsonl"); !line.empty()) {
    try {
      const nlohmann::json record = nlohmann::json::parse(line);
      status.step = record.value("step", std::int64_t{0});
      status.test_acc = record.value("test_acc", -1.0);
    } catch (const nlohmann::json::exception&) {
    }
  }
  if (lock_is_held(run.run_dir)) {
    status.phase = RunPhase::running;
    return status;
  }
  if (const auto failure = read_json(run.run_dir + "/" + kFailureFile)) {
    status.phase = RunPhase::failed;
    status.failure = failure->value("reason", "unknown");
    return status;
  }
  if (const auto summary = read_json(run.run_dir + "/summary.json")) {
    const std::int64_t step = summary->value("step", std::int64_t{0});
    const double last_test_acc = summary->value("last_test_acc", 0.0);
    const bool stopped = run.config.stop_at_test_acc > 0 && last_test_acc >= run.config.stop_at_test_acc;
    if (stopped || step >= run.config.max_steps) {
      status.phase = RunPhase::finished;
      status.step = step;
      return status;
    }
  }
  status.phase = run_checkpoint(run) ? RunPhase::interrupted : RunPhase::pending;
  return status;
}

void record_failure(const SweepRun& run, const std::string& reason, const std::string& log_tail) {
  const nlohmann::json record = {{"run", run.name}, {"reason", reason}, {"log_tail", log_tail}};
  write_file_atomically(run.run_dir + "/" + kFailureFile, record.dump(2) + "\n");
}

void clear_failure(const SweepRun& run) {
  std::error_code ec;
  fs::remove(run.run_dir + "/" + kFailureFile, ec);
}

}  // namespace tg

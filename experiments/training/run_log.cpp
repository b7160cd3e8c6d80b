#include "experiments/training/run_log.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace tg {

double seconds_since_start() {
  static const auto start = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

MetricsLog::MetricsLog(const std::string& path, std::int64_t keep_through_step) : path_(path) {
  if (keep_through_step >= 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::string kept, line;
    std::int64_t line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (line.empty()) continue;
      nlohmann::json record;
      try {
        record = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        // The interrupted process may have died mid-line; anything after it is after the checkpoint.
        break;
      }
      TG_CHECK(record.is_object() && record.contains("step") && record["step"].is_number_integer(),
               "metrics file {}: line {} has no integer 'step'", path, line_number);
      if (record["step"].get<std::int64_t>() > keep_through_step) break;
      kept += line + "\n";
    }
    write_file_atomically(path, kept);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
  TG_CHECK(fd >= 0, "cannot open metrics file {}: {}", path, std::strerror(errno));
  file_ = ::fdopen(fd, "a");
  if (file_ == nullptr) ::close(fd);
  TG_CHECK(file_ != nullptr, "cannot open metrics file {}: {}", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  TG_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0,
           "cannot write metrics file {}: {}", path_, std::strerror(errno));
}

ProgressDisplay::ProgressDisplay(bool enabled, std::int64_t total_steps)
    : live_(enabled && isatty(STDOUT_FILENO)), total_(total_steps) {}

namespace {
std::string eta(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const auto s = static_cast<long>(seconds);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) : fmt::format("{}:{:02}", s / 60, s % 60);
}
}  // namespace

void ProgressDisplay::draw(std::int64_t step, double steps_per_second) {
  const double remaining = steps_per_second > 0 ? static_cast<double>(total_ - step) / steps_per_second : -1;
  const int width = 20;
  const int filled = total_ > 0 ? static_cast<int>(width * static_cast<double>(step) / static_cast<double>(total_)) : 0;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(width, '.');
  std::string acc = have_eval_ ? fmt::format(" | train {:5.1f}% test {:5.1f}%", 100 * train_acc_, 100 * test_acc_) : "";
  fmt::print("\r[{}] step {}/{} | loss {:.4f}{} | {:.0f} steps/s | ETA {}\x1b[K", bar, step, total_, loss_, acc,
             steps_per_second, eta(remaining));
  std::fflush(stdout);
}

void ProgressDisplay::on_step(std::int64_t step, double loss, double steps_per_second) {
  loss_ = loss;
  if (!live_) return;
  const double now = seconds_since_start();
  if (now - last_draw_ < 0.1 && step != total_) return;
  last_draw_ = now;
  draw(step, steps_per_second);
}

void ProgressDisplay::on_eval(std::int64_t step, double train_loss, double train_acc, double test_loss,
                              double test_acc, double steps_per_second) {
  train_acc_ = train_acc;
  test_acc_ = test_acc;
  have_eval_ = true;
  if (live_) {
    draw(step, steps_per_second);
    return;
  }
  fmt::print("step {:>7} | train loss {:.4f} acc {:6.2f}% | test loss {:.4f} acc {:6.2f}% | {:.0f} steps/s\n", step,
             train_loss, 100 * train_acc, test_loss, 100 * test_acc, steps_per_second);
  std::fflush(stdout);
}

void ProgressDisplay::finish() {
  if (live_) fmt::print("\n");
}

}  // namespace tg

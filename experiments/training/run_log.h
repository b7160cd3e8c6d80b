// What a run shows and leaves behind while it trains: metrics.jsonl (one JSON object per
// evaluation) and a progress display — a live line on a terminal, plain lines otherwise.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace tg {

class MetricsLog {
 public:
  // Appends to `path`, never through a symlink; throws naming the path if it can't be opened. A resumed
  // run passes its checkpoint's step: records after it (logged by the interrupted process after its
  // last checkpoint, and about to be logged again) are dropped first, by an atomic rewrite.
  explicit MetricsLog(const std::string& path, std::int64_t keep_through_step = -1);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);  // one line, flushed

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

class ProgressDisplay {
 public:
  ProgressDisplay(bool enabled, std::int64_t total_steps);
  // Called after every step (cheap; redraws a terminal at most ~10 times a second).
  void on_step(std::int64_t step, double loss, double steps_per_second);
  // Called after every evaluation: on a terminal refreshes the line, otherwise prints one line.
  void on_eval(std::int64_t step, double train_loss, double train_acc, double test_loss, double test_acc,
               double steps_per_second);
  void finish();  // ends the live line

 private:
  void draw(std::int64_t step, double steps_per_second);
  bool live_;  // stdout is a terminal and progress is on
  std::int64_t total_;
  double last_draw_ = -1;
  double loss_ = 0, train_acc_ = 0, test_acc_ = 0;
  bool have_eval_ = false;
};

double seconds_since_start();  // monotonic clock, seconds since the process started timing

}  // namespace tg

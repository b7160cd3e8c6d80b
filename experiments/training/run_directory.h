// A run's directory and the files `tapegrok train` leaves in it: config.json, metrics.jsonl,
// checkpoint.safetensors, summary.json (and amplifier.safetensors for NeuralGrok).
//
// One process at a time: the directory is locked (flock on RUN/.lock) while a Trainer runs in it, so a
// second run into it stops with an error instead of interleaving its lines. A fresh run refuses a
// directory that already holds a run; only a resume continues one. Text files are written whole and
// atomically like checkpoints (engine/atomic_file.h): a symlink planted in the directory is replaced,
// never followed, and a full disk is an error, not an empty file.
#pragma once

#include <string>

namespace tg {

class RunDirectory {
 public:
  // Creates `path` if needed, locks it, and removes temp files that a killed write left behind.
  RunDirectory(std::string path, bool resuming);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write_text(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
  int lock_fd_ = -1;
};

}  // namespace tg

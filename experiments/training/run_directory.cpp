#include "experiments/training/run_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/atomic_file.h"
#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

namespace {

// What a run leaves behind; any of them means the directory holds a run.
constexpr const char* kRunFiles[] = {"metrics.jsonl", "checkpoint.safetensors", "summary.json", "config.json",
                                     "amplifier.safetensors"};

}  // namespace

RunDirectory::RunDirectory(std::string path, bool resuming) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(path_, ec);
  TG_CHECK(!ec, "cannot create run directory {}: {}", path_, ec.message());
  TG_CHECK(fs::is_directory(path_, ec),
           "run directory {} is not a directory", path_);
  const std::string lock = file(".lock");
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
  TG_CHECK(lock_fd_ >= 0, "cannot open the lock file {}: {}", lock, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    TG_CHECK(err != EWOULDBLOCK, "run directory {} is in use by another tapegrok process", path_);
    throw Error(fmt::format("cannot lock run directory {}: {}", path_, std::strerror(err)));
  }
  try {
    if (!resuming) {
      for (const char* name : kRunFiles) {
        TG_CHECK(!fs::exists(fs::symlink_status(file(name), ec)),
                 "run directory {} already holds a run ({} exists): resume it with --resume "
                 "{}/checkpoint.safetensors, or delete it or choose another --run-dir",
                 path_, name, path_);
      }
    }
    for (const char* name : kRunFiles) remove_stale_temp_files(file(name));
  } catch (...) {
    ::close(lock_fd_);  // no destructor runs for a constructor that throws
    throw;
  }
}

RunDirectory::~RunDirectory() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

void RunDirectory::write_text(const std::string& name, const std::string& text) const {
  write_file_atomically(file(name), text);
}

}  // namespace tg

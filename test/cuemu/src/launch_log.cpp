#include "test/cuemu/src/launch_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace cuemu {

namespace {

using Key = std::tuple<std::string, int, std::string, long long, std::size_t>;  // file, line, kernel, threads, smem

struct LaunchLog {
  std::mutex mu;
  std::map<Key, long long> counts;

  ~LaunchLog() {
    const char* dir = std::getenv("CUEMU_LAUNCH_LOG");
    if (!dir || !*dir || counts.empty()) return;
    std::string text;
    for (const auto& [key, n] : counts) {
      const auto& [file, line, kernel, threads, smem] = key;
      text += file + "\t" + std::to_string(line) + "\t" + kernel + "\t" + std::to_string(threads) + "\t" +
              std::to_string(smem) + "\t" + std::to_string(n) + "\n";
    }
    const std::string path = std::string(dir) + "/launches-" + std::to_string(getpid()) + ".tsv";
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) {
      std::fprintf(stderr, "cuemu: cannot write the launch log %s\n", path.c_str());
      return;
    }
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
      const ssize_t w = write(fd, p, left);
      if (w <= 0) break;
      p += w;
      left -= static_cast<std::size_t>(w);
    }
    close(fd);
  }
};

LaunchLog& log() {
  static LaunchLog instance;  // destroyed at exit, after main returns: writes the counts
  return instance;
}

}  // namespace

void record_launch(const LaunchSite& site, const LaunchConfig& cfg) {
  const long long threads = static_cast<long long>(cfg.block.x) * cfg.block.y * cfg.block.z;
  LaunchLog& l = log();
  std::lock_guard<std::mutex> g(l.mu);
  ++l.counts[Key{site.file, site.line, site.kernel, threads, cfg.dynamic_smem}];
}

}  // namespace cuemu

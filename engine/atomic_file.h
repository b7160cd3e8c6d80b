// Writing a file so that a reader, or a process killed mid-write, sees either the old content or the
// whole new content, never a part: the bytes go to PATH.tmp.<pid>.<n> in the same directory, are
// flushed and fsync'ed, then renamed over PATH. A symlink at PATH is replaced, never followed. On any
// failure (disk full included) the temp file is removed, PATH is left as it was, and tg::Error names
// PATH, the step that failed and the system's reason.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tg {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);  // creates the temp file
  ~AtomicFileWriter();                          // removes it unless committed
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, std::size_t n);
  void commit();  // fsync, close, rename over PATH, fsync the directory
  const std::string& temp_path() const { return temp_; }

 private:
  [[noreturn]] void fail(const char* step, int err) const;
  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_file_atomically(const std::string& path, std::string_view bytes);

// Removes the PATH.tmp.<pid>.<n> files next to PATH whose writing process no longer runs (a kill -9
// between creating and renaming leaves one behind).
void remove_stale_temp_files(const std::string& path);

}  // namespace tg

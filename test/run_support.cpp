#include "run_support.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;

namespace tgtest {

std::string fresh_temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("tapegrok_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

tg::TrainConfig tiny_run_config(const std::string& run_dir) {
  tg::TrainConfig c;
  c.task = "a+b";
  c.modulus = 11;
  c.width = 16;
  c.heads = 2;
  c.layers = 1;
  c.batch_size = 16;
  c.max_steps = 24;
  c.eval_every = 8;
  c.lr = 3e-3;
  c.device = "cpu";
  c.run_dir = run_dir;
  c.progress = false;
  return c;
}

}  // namespace tgtest

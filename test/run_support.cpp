#include "run_support.h"

#include <cstdio>

#include "experiments/cli/cli.h"

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

CliResult run_tapegrok(std::vector<std::string> args) {
  args.insert(args.begin(), "tapegrok");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  // Both output streams into one temp file for the call.
  std::fflush(stdout);
  std::fflush(stderr);
  std::FILE* capture = std::tmpfile();
  const int saved_out = ::dup(STDOUT_FILENO), saved_err = ::dup(STDERR_FILENO);
  ::dup2(::fileno(capture), STDOUT_FILENO);
  ::dup2(::fileno(capture), STDERR_FILENO);
  CliResult r;
  r.code = tg::run_cli(static_cast<int>(argv.size()), argv.data());
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(saved_out, STDOUT_FILENO);
  ::dup2(saved_err, STDERR_FILENO);
  ::close(saved_out);
  ::close(saved_err);
  std::rewind(capture);
  for (int c; (c = std::fgetc(capture)) != EOF;) r.output.push_back(static_cast<char>(c));
  std::fclose(capture);
  return r;
}

std::vector<std::string> tiny_run_flags(const std::string& run_dir) {
  return {"--task", "a+b", "--modulus", "11", "--width", "16", "--heads", "2", "--layers", "1", "--batch-size", "16",
          "--eval-every", "8", "--lr", "3e-3", "--device", "cpu", "--no-progress", "--run-dir",
          run_dir};
}

}  // namespace tgtest

#include "experiments/cli/analyze_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace tg {

ExtraCommand register_analyze_command(CLI::App& app) {
  struct Args {
    std::string run, out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* analyze = app.add_subcommand(
      "analyze", "Fourier analysis of an a+b / a-b / a*b run: key frequencies, neurons, progress measures");
  analyze->add_option("run", args->run, "a run directory (its kept checkpoints give the progress measures) or one "
                                        "checkpoint")->required();
  analyze->add_option("--out", args->out, "where the results go (default RUN/analysis)");
  return {analyze, [args] {
#ifdef TAPEGROK_PYTHON_DIR
            // The package of this build first on the path; the Python it was built for.
            const char* old_path = std::getenv("PYTHONPATH");
            const std::string path = std::string(TAPEGROK_PYTHON_DIR) + (old_path ? ":" + std::string(old_path) : "");
            ::setenv("PYTHONPATH", path.c_str(), 1);
            std::vector<std::string> argv = {TAPEGROK_PYTHON_EXECUTABLE, "-m", "tapegrok.analyze", args->run};
            if (!args->out.empty()) argv.insert(argv.end(), {"--out", args->out});
            std::vector<char*> c_argv;
            for (auto& a : argv) c_argv.push_back(a.data());
            c_argv.push_back(nullptr);
            ::execv(c_argv[0], c_argv.data());  // returns only on failure
            throw Error(fmt::format("analyze: cannot run {}: {}", c_argv[0], std::strerror(errno)));
#else
            throw Error("analyze: this build has no Python module (pybind11 was not found, or TAPEGROK_PYTHON=OFF)");
#endif
          }};
}

}  // namespace tg

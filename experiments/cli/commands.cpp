#include "experiments/cli/commands.h"

#include "experiments/cli/analyze_command.h"
#include "experiments/cli/dump_meta.h"
#include "experiments/cli/transfer_command.h"
#include "experiments/sweep/sweep_command.h"

#include <fmt/core.h>

#include "engine/device.h"

namespace tg {

std::vector<ExtraCommand> register_extra_commands(CLI::App& app) {
  std::vector<ExtraCommand> commands;
  commands.push_back(register_dump_meta_command(app));  // tapegrok dump-meta (experiments/cli/dump_meta.cpp)
  commands.push_back(register_transfer_command(app));   // tapegrok transfer (experiments/training/embedding_transfer.cpp)
  commands.push_back(register_sweep_command(app));      // tapegrok sweep (experiments/sweep/)
  commands.push_back(register_analyze_command(app));    // tapegrok analyze (python/tapegrok/analyze.py)

  // tapegrok devices: what --device auto would pick, and why not the GPU (scripts size budgets by it).
  CLI::App* devices = app.add_subcommand("devices", "print the device --device auto picks (cpu or cuda:0)");
  commands.push_back({devices, [] {
                        fmt::print("{}\n", parse_device("auto").str());
                        if (!cuda_is_available()) fmt::print(stderr, "no GPU: {}\n", cuda_unavailable_reason());
                      }});
  return commands;
}

}  // namespace tg

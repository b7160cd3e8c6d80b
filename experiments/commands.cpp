#include "experiments/commands.h"

namespace tg {

std::vector<ExtraCommand> register_extra_commands(CLI::App& app) {
  std::vector<ExtraCommand> commands;
  (void)app;
  return commands;
}

}  // namespace tg

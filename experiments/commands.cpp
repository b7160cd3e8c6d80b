#include "experiments/commands.h"

#include "experiments/dump_meta.h"
#include "experiments/groktransfer.h"

namespace tg {

std::vector<ExtraCommand> register_extra_commands(CLI::App& app) {
  std::vector<ExtraCommand> commands;
  commands.push_back(register_dump_meta_command(app));  // tapegrok dump-meta (experiments/dump_meta.cpp)
  commands.push_back(register_transfer_command(app));   // tapegrok transfer (experiments/groktransfer.cpp)
  return commands;
}

}  // namespace tg

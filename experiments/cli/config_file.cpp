#include "experiments/cli/config_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "engine/error.h"

namespace tg {

void apply_config_file(CLI::App* command, const std::string& path) {
  std::error_code ec;
  TG_CHECK(std::filesystem::is_regular_file(path, ec), "--config {}: not a readable file", path);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    throw Error(fmt::format("--config {}: {}", path, e.what()));
  }
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // CLI11's markers of a section's start and end
    // A [section] header is allowed only when it names this subcommand.
    TG_CHECK(item.parents.empty() || (item.parents.size() == 1 && item.parents[0] == command->get_name()),
             "--config {}: setting '{}' is in a section other than [{}]", path, item.fullname(), command->get_name());
    std::string flag = item.name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    CLI::Option* opt = command->get_option_no_throw("--" + flag);
    TG_CHECK(opt != nullptr && flag != "config" && flag != "help",
             "--config {}: unknown setting '{}' (keys are the long flag names of '{}')", path, item.name,
             command->get_name());
    if (opt->count() > 0) continue;  // the command line wins
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(fmt::format("--config {}: setting '{}': {}", path, item.name, e.what()));
    }
  }
}

}  // namespace tg

// kvpager budget DEVICE SIZE|PCT: set the bound on the sum of all instances' memory on a device.
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::cli {
namespace {

struct BudgetOptions {
  std::string device;
  std::string value;
};

void run_budget(const BudgetOptions& o) {
  limits::Registry registry = registry_from_env();
  const std::string label = registry.resolve_device(o.device);
  const uint64_t bytes = registry.set_budget(label, o.value);
  std::printf("%s: budget %s\n", label.c_str(), format_size(bytes).c_str());
}

void register_budget(CommandGroups& groups) {
  auto o = std::make_shared<BudgetOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "budget",
      "Set a device's memory budget: a size (40G), a fraction (0.9) or a percentage (90%)");
  cmd->add_option("device", o->device, "Device: cuda0, cuda:0, host0 or an ordinal")->required();
  cmd->add_option("value", o->value, "Budget")->required();
  cmd->callback([o] { run_budget(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_budget);
}  // namespace kvpager::cli

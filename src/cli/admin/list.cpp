// kvpager list: the registry's devices and instances, once (text or --json).
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"

namespace kvpager::cli {
namespace {

struct ListOptions {
  bool json = false;
};

void run_list(const ListOptions& o) {
  const limits::RegistrySnapshot snap = registry_from_env().scan();
  report_skipped(snap);
  const std::string out = o.json ? registry_json(snap).dump(2) + "\n" : render_registry_table(snap);
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void register_list(CommandGroups& groups) {
  auto o = std::make_shared<ListOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "list", "List registered KV-cache instances and device budgets (/dev/shm segments)");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] { run_list(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_list);
}  // namespace kvpager::cli

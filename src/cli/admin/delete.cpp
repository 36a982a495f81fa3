// kvpager delete NAME [--force]: remove an instance's segment (and its device accounting when
// the owner is dead). A live instance is refused unless --force.
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"

namespace kvpager::cli {
namespace {

struct DeleteOptions {
  std::string name;
  bool force = false;
};

void run_delete(const DeleteOptions& o) {
  registry_from_env().remove(o.name, o.force);
  std::printf("deleted %s\n", o.name.c_str());
}

void register_delete(CommandGroups& groups) {
  auto o = std::make_shared<DeleteOptions>();
  CLI::App* cmd = groups.root.add_subcommand("delete", "Remove an instance's registry segment");
  cmd->add_option("name", o->name, "Instance name")->required();
  cmd->add_flag("--force", o->force, "Remove it even though its process is alive");
  cmd->callback([o] { run_delete(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_delete);
}  // namespace kvpager::cli

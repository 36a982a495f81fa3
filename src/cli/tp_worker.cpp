// kvpager tp-worker: the hidden subcommand a TpScheduler execs for each rank. Its command line
// is written by tp::worker_command_line(); nobody types it.
#include "kvpager/tp/tp_worker.hpp"
#include "command_registry.hpp"

namespace kvpager::cli {
namespace {

void register_tp_worker(CommandGroups& groups) {
  CLI::App* cmd = groups.root.add_subcommand("tp-worker", "tensor-parallel worker (internal)");
  cmd->group("");  // hidden from --help
  cmd->prefix_command();
  cmd->allow_extras();
  cmd->callback([cmd] {
    const tp::WorkerLaunch launch = tp::parse_worker_command_line(cmd->remaining());
    throw ExitStatus{tp::run_worker(launch)};
  });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_tp_worker);
}  // namespace kvpager::cli

// kvpager watch: `kvpager list` refreshed every -n seconds, as plain text (or JSON lines).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

#include "admin/registry_view.hpp"
#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {
namespace {

struct WatchOptions {
  double interval_s = 2.0;
  uint64_t count = 0;  // 0 (no --count): until interrupted
  bool json = false;
};

void run_watch(const WatchOptions& o) {
  if (!(o.interval_s >= 0.05 && o.interval_s <= 3600)) {
    throw InvalidArgument("watch: -n must be between 0.05 and 3600 seconds");
  }
  const limits::Registry registry = registry_from_env();
  const bool tty = ::isatty(STDOUT_FILENO);
  for (uint64_t i = 0; o.count == 0 || i < o.count; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.interval_s));
    const limits::RegistrySnapshot snap = registry.scan();
    report_skipped(snap);
    std::string out;
    if (o.json) {
      out = registry_json(snap).dump() + "\n";
    } else {
      const std::time_t now = std::time(nullptr);
      char when[64];
      std::strftime(when, sizeof when, "%F %T", std::localtime(&now));
      char head[160];
      std::snprintf(head, sizeof head, "Every %.1fs: kvpager list (%s%s)    %s\n\n", o.interval_s,
                    registry.config().dir.c_str(), ("/" + registry.config().prefix + "*").c_str(),
                    when);
      out = (tty ? "\033[H\033[2J" : "") + std::string(head) + render_registry_table(snap) +
            (tty ? "" : "\n");
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
}

void register_watch(CommandGroups& groups) {
  auto o = std::make_shared<WatchOptions>();
  CLI::App* cmd = groups.root.add_subcommand("watch", "Refreshing table of instances and budgets");
  cmd->add_option("-n,--interval", o->interval_s, "Seconds between refreshes (default 2)")
      ->check(finite_in(0.05, 3600));
  cmd->add_option("--count", o->count, "Stop after this many refreshes, 1 to 1e9 (default: never)")
      ->check(integer_in(1, 1000000000));
  cmd->add_flag("--json", o->json, "One JSON object per refresh");
  cmd->callback([o] { run_watch(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_watch);
}  // namespace kvpager::cli

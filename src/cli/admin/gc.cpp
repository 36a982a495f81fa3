// kvpager gc: remove the segments of dead instances and reclaim their device accounting.
// Exit 1 when a device's lock could not be taken in time (KVPAGER_LOCK_TIMEOUT_MS), after
// doing everything else.
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::cli {
namespace {

struct GcOptions {
  bool json = false;
};

void run_gc(const GcOptions& o) {
  const limits::GcReport r = registry_from_env().gc();
  if (o.json) {
    nlohmann::json slots = nlohmann::json::array(), skipped = nlohmann::json::array();
    for (const auto& s : r.reclaimed_slots) {
      slots.push_back({{"name", s.name}, {"pid", s.owner.pid}, {"charged_bytes", s.charged_bytes}});
    }
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& k : r.skipped) skipped.push_back({{"path", k.path}, {"reason", k.reason}});
    for (const auto& k : r.failed) failed.push_back({{"path", k.path}, {"reason", k.reason}});
    const nlohmann::json j = {{"removed_instances", r.removed_instances},
                              {"reclaimed_slots", slots},
                              {"reclaimed_bytes", r.reclaimed_bytes},
                              {"removed_temporaries", r.removed_temporaries},
                              {"skipped", skipped},
                              {"failed", failed}};
    std::printf("%s\n", j.dump(2).c_str());
    if (!r.failed.empty()) throw ExitStatus{kExitFailure};
    return;
  }
  for (const auto& k : r.skipped) {
    std::fprintf(stderr, "kvpager: skipped %s: %s\n", k.path.c_str(), k.reason.c_str());
  }
  for (const auto& n : r.removed_instances) std::printf("removed stale instance %s\n", n.c_str());
  for (const auto& s : r.reclaimed_slots) {
    std::printf("reclaimed %s held by dead pid %d (%s)\n", format_size(s.charged_bytes).c_str(),
                s.owner.pid, s.name.c_str());
  }
  for (const auto& t : r.removed_temporaries) std::printf("removed %s\n", t.c_str());
  std::printf("gc: %zu segment(s) removed, %s reclaimed\n", r.removed_instances.size(),
              format_size(r.reclaimed_bytes).c_str());
  for (const auto& k : r.failed) {
    std::fprintf(stderr, "kvpager: gc: %s: %s\n", k.path.c_str(), k.reason.c_str());
  }
  if (!r.failed.empty()) throw ExitStatus{kExitFailure};
}

void register_gc(CommandGroups& groups) {
  auto o = std::make_shared<GcOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "gc", "Remove segments of dead instances and reclaim their device accounting");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] { run_gc(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_gc);
}  // namespace kvpager::cli

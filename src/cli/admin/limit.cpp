// kvpager limit NAME SIZE / limit-percent NAME PCT: set an instance's memory limit. The
// instance sees the change within its poll interval (10 ms by default): lowering unmaps its
// free and reserved pages above the limit (blocks in use stay); raising applies to the next
// allocation.
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::cli {
namespace {

struct LimitOptions {
  std::string name;
  std::string value;
};

void report(const std::string& name, uint64_t before, uint64_t after) {
  std::printf("%s: limit %s (was %s)\n", name.c_str(), limit_text(after).c_str(),
              limit_text(before).c_str());
}

void run_limit(const LimitOptions& o) {
  // Validate everything before touching anything.
  const uint64_t bytes = (o.value == "none" || o.value == "unlimited") ? limits::format::kUnlimited
                                                                       : parse_size(o.value);
  limits::Registry registry = registry_from_env();
  const limits::InstanceRecord before = registry.set_limit(o.name, bytes);
  report(o.name, before.limit_bytes, bytes);
}

void run_limit_percent(const LimitOptions& o) {
  limits::Registry registry = registry_from_env();
  const uint64_t bytes = registry.limit_for_percent(o.name, o.value);
  const limits::InstanceRecord before = registry.set_limit(o.name, bytes);
  report(o.name, before.limit_bytes, bytes);
}

void register_limit(CommandGroups& groups) {
  auto o = std::make_shared<LimitOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "limit", "Set an instance's memory limit (512M, 2GiB, 1.5G, bytes, or none)");
  cmd->add_option("name", o->name, "Instance name")->required();
  cmd->add_option("size", o->value,
                  "New limit; 0 is a limit of 0 bytes (the instance gives back all it can), "
                  "'none' removes the limit (unlike Python's KvCache.resize(0), which means none)")
      ->required();
  cmd->callback([o] { run_limit(*o); });

  auto p = std::make_shared<LimitOptions>();
  CLI::App* pct = groups.root.add_subcommand(
      "limit-percent", "Set an instance's memory limit as a percentage of its device's memory");
  pct->add_option("name", p->name, "Instance name")->required();
  pct->add_option("percent", p->value, "0 to 100, e.g. 25 or 12.5%")->required();
  pct->callback([p] { run_limit_percent(*p); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_limit);
}  // namespace kvpager::cli

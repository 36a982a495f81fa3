// kvpager guarantee NAME SIZE / guarantee-percent NAME PCT: set a live instance's guaranteed
// share of its device budget. While the instance holds less than its guarantee and waits for
// memory, the others may not take the difference and those above their own guarantee give
// memory back; the device's guarantees sum to at most its budget. Takes effect at once (the
// device segment holds the guarantee); 0 or none removes it.
#include <cstdio>

#include "admin/registry_view.hpp"
#include "command_registry.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::cli {
namespace {

struct GuaranteeOptions {
  std::string name;
  std::string value;
};

std::string guarantee_text(uint64_t bytes) {
  return bytes == 0 ? "none" : format_size(bytes);
}

void apply(limits::Registry& registry, const std::string& name, uint64_t bytes) {
  const uint64_t before = registry.set_guarantee(name, bytes);
  std::printf("%s: guarantee %s (was %s)\n", name.c_str(), guarantee_text(bytes).c_str(),
              guarantee_text(before).c_str());
  for (const auto& s : registry.scan().instances) {
    const uint64_t limit = s.record.limit_bytes;
    if (s.record.name == name && limit != limits::format::kUnlimited && bytes > limit) {
      std::fprintf(stderr,
                   "kvpager: note: %s's limit is %s; it cannot use a guarantee above that "
                   "(`kvpager limit %s SIZE`)\n",
                   name.c_str(), format_size(limit).c_str(), name.c_str());
    }
  }
}

void run_guarantee(const GuaranteeOptions& o) {
  // Validate everything before touching anything.
  const uint64_t bytes = (o.value == "none") ? 0 : parse_size(o.value);
  limits::Registry registry = registry_from_env();
  apply(registry, o.name, bytes);
}

void run_guarantee_percent(const GuaranteeOptions& o) {
  limits::Registry registry = registry_from_env();
  apply(registry, o.name, registry.guarantee_for_percent(o.name, o.value));
}

void register_guarantee(CommandGroups& groups) {
  auto o = std::make_shared<GuaranteeOptions>();
  CLI::App* cmd = groups.root.add_subcommand(
      "guarantee",
      "Set an instance's guaranteed share of its device budget (512M, 2GiB, bytes, 0 or none)");
  cmd->add_option("name", o->name, "Instance name")->required();
  cmd->add_option("size", o->value, "New guarantee; 0 or none removes it")->required();
  cmd->callback([o] { run_guarantee(*o); });

  auto p = std::make_shared<GuaranteeOptions>();
  CLI::App* pct = groups.root.add_subcommand(
      "guarantee-percent",
      "Set an instance's guaranteed share as a percentage of its device's budget");
  pct->add_option("name", p->name, "Instance name")->required();
  pct->add_option("percent", p->value, "0 to 100, e.g. 25 or 12.5%")->required();
  pct->callback([p] { run_guarantee_percent(*p); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_guarantee);
}  // namespace kvpager::cli

// validate_demo_config (demo_workload.hpp): the coordinator calls it before it starts anything,
// and each worker again, so a hand-started demo-worker cannot be fed what the demo refuses.
#include <limits>
#include <string>

#include "cli_checks.hpp"
#include "demo/demo_workload.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::cli {

namespace {

uint64_t size_of(const char* flag, const std::string& text) {
  try {
    return parse_size(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("demo: ") + flag + " " + text + ": " + e.what());
  }
}

}  // namespace

void validate_demo_config(const DemoConfig& cfg) {
  if (cfg.instances < 1 || cfg.instances > 4) {
    throw InvalidArgument("demo: --instances must be 1 to 4");
  }
  auto rate = [](const char* flag, double v, double lo) {
    if (!(v >= lo && v <= kDemoMaxRate)) {
      throw InvalidArgument(std::string("demo: ") + flag + " " + short_number(v) + ": must be " +
                            (lo > 0 ? "above 0" : "0") + " to " + short_number(kDemoMaxRate) +
                            " requests/s");
    }
  };
  if (!(cfg.duration_s >= 1 && cfg.duration_s <= 600)) {
    throw InvalidArgument("demo: --duration " + short_number(cfg.duration_s) +
                          ": must be 1 to 600 seconds");
  }
  if (cfg.bursts < 1 || cfg.bursts > 100) {
    throw InvalidArgument("demo: --bursts " + std::to_string(cfg.bursts) + ": must be 1 to 100");
  }
  rate("--peak-rate", cfg.peak_rate, std::numeric_limits<double>::min());
  rate("--idle-rate", cfg.idle_rate, 0);
  vmm::parse_backend_choice(cfg.backend);
  kv::parse_layout(cfg.layout);
  const uint64_t block = demo_geometry().block_bytes_all_layers();
  const uint64_t capacity = size_of("--capacity", cfg.capacity);
  if (capacity < block || capacity > kDemoMaxCapacity) {
    throw InvalidArgument("demo: --capacity " + cfg.capacity + ": must be " + format_size(block) +
                          " (one block) to " + format_size(kDemoMaxCapacity));
  }
  if (!cfg.limit.empty()) size_of("--limit", cfg.limit);
  limits::parse_budget(cfg.budget, 1ull << 40);
}

}  // namespace kvpager::cli

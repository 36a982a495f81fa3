#include <string>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/broadcaster.hpp"

namespace kvpager::tp {

#define KVPAGER_TP_STRATEGY(name, transport, factory, source, summary) \
  std::unique_ptr<Broadcaster> factory(Links links);
#include "strategies.inc"
#undef KVPAGER_TP_STRATEGY

namespace {
#define KVPAGER_TP_STRATEGY(name, transport, factory, source, summary) \
  StrategyInfo{name, Transport::transport, &factory, source, summary},
const StrategyInfo kStrategies[] = {
#include "strategies.inc"
};
#undef KVPAGER_TP_STRATEGY
}  // namespace

std::span<const StrategyInfo> strategies() {
  return kStrategies;
}

const StrategyInfo& find_strategy(std::string_view name) {
  std::string known;
  for (const auto& s : kStrategies) {
    if (name == s.name) return s;
    known += (known.empty() ? "" : ", ") + std::string(s.name);
  }
  throw InvalidArgument("unknown broadcast strategy '" + std::string(name) + "' (choose " + known +
                        ")");
}

}  // namespace kvpager::tp

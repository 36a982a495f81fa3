#pragma once
// Broadcaster: one broadcast strategy (seq, thread, async, shm, ...) behind one interface.
//
// broadcast() sends one command to the ranks in `ranks` and fills replies[r] for each of them:
// the worker's reply, or kTimeout / kDied from the link. It returns once every targeted rank
// replied, died or timed out, and never throws for a rank's failure. A rank is blamed for a
// timeout only when it itself used the whole span from the broadcast's start to `deadline`:
// parallel strategies post to all at once; seq gives each rank that span from its own post,
// so a hung rank never makes the healthy ones after it look hung (a seq broadcast may then
// take up to one span per hung rank).
// Hot path: no allocation.
// Thread safety: one broadcast at a time.
//
// Adding a strategy: write src/tp/<name>_broadcaster.cpp defining a factory
//   std::unique_ptr<Broadcaster> make_<name>_broadcaster(std::span<const
//   std::unique_ptr<RankLink>>)
// and add one KVPAGER_TP_STRATEGY line to src/tp/strategies.inc (benchmarks/tp/README.md).
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/rank_link.hpp"

namespace kvpager::tp {

using RankMask = uint64_t;  // bit r: rank r
inline constexpr int kMaxRanks = 64;

class Broadcaster {
 public:
  virtual ~Broadcaster() = default;
  virtual void broadcast(const Command& command, RankMask ranks, std::span<Reply> replies,
                         Clock::time_point deadline) = 0;
};

using Links = std::span<const std::unique_ptr<RankLink>>;
using BroadcasterFactory = std::unique_ptr<Broadcaster> (*)(Links links);

struct StrategyInfo {
  const char* name;
  Transport transport;  // which links the strategy needs
  BroadcasterFactory make;
  const char* source;  // the file that implements it, as the seed's summary prints
  const char* summary;
};

// Every registered strategy, in registration order.
std::span<const StrategyInfo> strategies();
// InvalidArgument listing the known names when `name` is not one of them.
const StrategyInfo& find_strategy(std::string_view name);

}  // namespace kvpager::tp

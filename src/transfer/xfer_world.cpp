#include "xfer_world.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "kvpager/common/error.hpp"

namespace kvpager::transfer::detail {

namespace {

std::string fingerprint(const XferConfig& c) {
  nlohmann::json j;
  for (const auto& f : nixlbench_flags(c)) {
    if (f.name == "etcd_endpoints") continue;
    std::visit([&](const auto& v) { j[f.name] = v; }, f.value);
  }
  return j.dump();
}

}  // namespace

XferWorld::XferWorld(const XferConfig& c, const XferLayout& l)
    : etcd_(c.etcd_endpoints),
      prefix_("/kvpager/xfer/" + c.benchmark_group + "/"),
      timeout_(std::chrono::seconds(c.peer_timeout_s)) {
  const uint32_t world = l.world_size();
  const std::string me = "pid " + std::to_string(::getpid());
  if (c.rank) {
    if (*c.rank >= world) {
      throw InvalidArgument("--rank " + std::to_string(*c.rank) + ": the world has " +
                            std::to_string(world) + " ranks (0.." + std::to_string(world - 1) +
                            ")");
    }
    if (!etcd_.create(prefix_ + "rank/" + std::to_string(*c.rank), me)) {
      throw StateError("rank " + std::to_string(*c.rank) + " of benchmark group '" +
                       c.benchmark_group + "' at " + etcd_.endpoint() +
                       " is already taken (a stale run? pass another --benchmark_group)");
    }
    rank_ = *c.rank;
  } else {
    bool claimed = false;
    for (uint32_t r = 0; r < world && !claimed; ++r) {
      if (etcd_.create(prefix_ + "rank/" + std::to_string(r), me)) rank_ = r, claimed = true;
    }
    if (!claimed) {
      throw StateError("benchmark group '" + c.benchmark_group + "' at " + etcd_.endpoint() +
                       " already has all " + std::to_string(world) +
                       " ranks (a stale run? pass another --benchmark_group)");
    }
  }
  const std::string mine = fingerprint(c);
  if (!etcd_.create(prefix_ + "config", mine)) {
    const auto theirs = etcd_.get(prefix_ + "config");
    if (theirs && *theirs != mine) {
      etcd_.erase(prefix_ + "rank/" + std::to_string(rank_));
      throw StateError("the ranks of benchmark group '" + c.benchmark_group +
                       "' were started with different flags; start every rank with the same "
                       "flags (or pass another --benchmark_group)");
    }
  }
}

XferWorld::~XferWorld() {
  if (rank_ != 0 || !finished_) return;
  try {
    etcd_.erase_prefix(prefix_);
  } catch (...) {
    // best effort: the next run reports a stale group
  }
}

void XferWorld::put(const std::string& name, const std::string& value) {
  etcd_.put(prefix_ + name, value);
}

std::string XferWorld::wait(const std::string& name, const std::string& what,
                            const std::function<void()>& idle) {
  return etcd_.wait_for(prefix_ + name, timeout_, what, idle);
}

}  // namespace kvpager::transfer::detail

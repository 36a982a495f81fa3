#include "xfer_world.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <exception>
#include <optional>

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
      endpoints_(c.etcd_endpoints),
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
  heartbeat_ = std::thread(&XferWorld::beat, this, c.etcd_endpoints);
}

void XferWorld::beat(std::string endpoints) {
  try {
    EtcdClient etcd(endpoints);  // a client per thread
    const std::string key = prefix_ + "alive/" + std::to_string(rank_);
    std::unique_lock<std::mutex> lock(mutex_);
    for (uint64_t n = 0; !stop_; ++n) {
      lock.unlock();
      etcd.put(key, std::to_string(n));
      lock.lock();
      stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    }
  } catch (...) {
    // etcd went away: peers notice the silence; the main thread's next call reports it
  }
}

XferWorld::~XferWorld() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  // Rank 0 after a clean run, or any rank that fails: a half-finished group must not feed a
  // later run stale addresses, so it goes (peers still waiting then report the missing rank).
  if (finished_ && rank_ != 0) return;
  try {
    etcd_.erase_prefix(prefix_);
  } catch (...) {
    // best effort: the next run reports a stale group
  }
}

void XferWorld::put(const std::string& name, const std::string& value) {
  etcd_.put(prefix_ + name, value);
}

std::string XferWorld::wait(const std::string& name, uint32_t peer, const std::string& what,
                            const std::function<void()>& idle) {
  if (!idle) return wait_with(etcd_, name, peer, what);
  std::atomic<bool> done{false};
  std::string value;
  std::exception_ptr error;
  std::thread poller([&] {
    try {
      EtcdClient etcd(endpoints_);
      value = wait_with(etcd, name, peer, what);
    } catch (...) {
      error = std::current_exception();
    }
    done.store(true, std::memory_order_release);
  });
  while (!done.load(std::memory_order_acquire)) idle();
  poller.join();
  if (error) std::rethrow_exception(error);
  return value;
}

std::string XferWorld::wait_with(EtcdClient& etcd, const std::string& name, uint32_t peer,
                                 const std::string& what) {
  const std::string alive_key = prefix_ + "alive/" + std::to_string(peer);
  std::optional<std::string> last_beat;
  auto last_change = std::chrono::steady_clock::now();
  for (;;) {
    try {
      // Short slices; between them, a moving heartbeat extends the deadline.
      return etcd.wait_for(prefix_ + name, std::chrono::milliseconds(500), what);
    } catch (const Timeout&) {
    }
    auto beat = etcd.get(alive_key);
    const auto now = std::chrono::steady_clock::now();
    if (beat && beat != last_beat) {
      last_beat = beat;
      last_change = now;
    } else if (now - last_change > timeout_) {
      throw Timeout("waited " + std::to_string(timeout_.count() / 1000) + " s for " + what +
                    (beat ? " (rank " + std::to_string(peer) + " stopped beating)"
                          : " (rank " + std::to_string(peer) + " never joined)") +
                    " (etcd key " + prefix_ + name + " at " + etcd.endpoint() + ")");
    }
  }
}

}  // namespace kvpager::transfer::detail

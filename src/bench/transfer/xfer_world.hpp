#pragma once
// One rank's membership in a multi-process benchmark run, coordinated through etcd as
// nixlbench does (internal to the transfer engine). Keys live under
// /kvpager/xfer/<benchmark_group>/. A rank is claimed with a create-if-absent transaction (the
// requested --rank, or the first free one); the first rank records the run's configuration
// and every later rank must match it. Rank 0 removes the whole group when it finishes, and a
// rank that fails removes it at once; a group left behind by a killed run is reported by the
// next run, which should pass another --benchmark_group. Every rank beats a heartbeat key
// (alive/<rank>) once a second from its own thread and etcd client, so peers can tell a slow rank
// from a dead one.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "kvpager/bench/transfer/etcd_client.hpp"
#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"

namespace kvpager::transfer::detail {

class XferWorld {
 public:
  // Connects and claims a rank. Throws Error when etcd is unreachable, InvalidArgument when
  // the requested rank is out of range, StateError when the group is full or disagrees.
  XferWorld(const XferConfig& config, const XferLayout& layout);
  ~XferWorld();  // rank 0 after finish(), or any rank without finish(): removes the group
  XferWorld(const XferWorld&) = delete;
  XferWorld& operator=(const XferWorld&) = delete;

  uint32_t rank() const { return rank_; }
  EtcdClient& etcd() { return etcd_; }

  // key = <prefix><name>
  void put(const std::string& name, const std::string& value);
  // Waits for <prefix><name>, which rank `peer` will write. Gives up (Timeout naming `what`)
  // only when the peer has not shown up, or its heartbeat has not moved, for peer_timeout:
  // a long benchmark row is not a dead peer. With `idle`, etcd is polled from a helper thread
  // (its own client) while this thread keeps calling idle() (e.g. progressing a UCX worker,
  // which an HTTP round trip must never stall).
  std::string wait(const std::string& name, uint32_t peer, const std::string& what,
                   const std::function<void()>& idle = {});
  // Marks a clean end (rank 0 then removes the group on destruction).
  void finish() { finished_ = true; }

 private:
  void beat(std::string endpoints);
  std::string wait_with(EtcdClient& etcd, const std::string& name, uint32_t peer,
                        const std::string& what);

  EtcdClient etcd_;
  std::string endpoints_;
  std::string prefix_;
  uint32_t rank_ = 0;
  std::chrono::milliseconds timeout_;
  bool finished_ = false;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread heartbeat_;  // last member: started after everything above exists
};

}  // namespace kvpager::transfer::detail

#pragma once
// One rank's membership in a multi-process benchmark run, coordinated through etcd as
// nixlbench does (internal to the transfer layer). Keys live under
// /kvpager/xfer/<benchmark_group>/. A rank is claimed with a create-if-absent transaction (the
// requested --rank, or the first free one); the first rank records the run's configuration
// and every later rank must match it. Rank 0 removes the whole group when it finishes; a
// group left behind by a crashed run is reported by the next run, which should pass another
// --benchmark_group.
#include <chrono>
#include <functional>
#include <string>

#include "kvpager/transfer/etcd_client.hpp"
#include "kvpager/transfer/xfer_config.hpp"
#include "kvpager/transfer/xfer_layout.hpp"

namespace kvpager::transfer::detail {

class XferWorld {
 public:
  // Connects and claims a rank. Throws Error when etcd is unreachable, InvalidArgument when
  // the requested rank is out of range, StateError when the group is full or disagrees.
  XferWorld(const XferConfig& config, const XferLayout& layout);
  ~XferWorld();  // rank 0, after finish(): removes the group's keys
  XferWorld(const XferWorld&) = delete;
  XferWorld& operator=(const XferWorld&) = delete;

  uint32_t rank() const { return rank_; }
  EtcdClient& etcd() { return etcd_; }

  // key = <prefix><name>
  void put(const std::string& name, const std::string& value);
  std::string wait(const std::string& name, const std::string& what,
                   const std::function<void()>& idle = {});
  // Marks a clean end (rank 0 then removes the group on destruction).
  void finish() { finished_ = true; }

 private:
  EtcdClient etcd_;
  std::string prefix_;
  uint32_t rank_ = 0;
  std::chrono::milliseconds timeout_;
  bool finished_ = false;
};

}  // namespace kvpager::transfer::detail

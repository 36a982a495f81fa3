#pragma once
// ShmLink: a RankLink over a ShmRing. post() copies the command into the next slot and
// publishes it (FUTEX_WAKE only when the worker sleeps); await() spins for `spin`, then sleeps
// on the futex in slices, checking between slices whether the worker has died.
#include "kvpager/tp/rank_link.hpp"
#include "kvpager/tp/shm_ring.hpp"

namespace kvpager::tp {

class ShmLink final : public RankLink {
 public:
  ShmLink(RankId rank, const std::string& binary, const std::vector<std::string>& args,
          const std::vector<int>& extra_fds, std::chrono::nanoseconds spin);
  Transport transport() const override { return Transport::kShm; }

  void post(const Command& command) override;
  void await(Reply& out, Clock::time_point deadline) override;

 private:
  void close_channel() override {}  // always a spawned worker: drop() kills it

  ShmSegment segment_;
  std::chrono::nanoseconds spin_;
};

}  // namespace kvpager::tp

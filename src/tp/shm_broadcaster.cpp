// shm: a shared-memory command ring per rank (the fast path). Post to every ring (a store,
// plus FUTEX_WAKE only for a sleeping worker), then collect the acks: spin briefly, then sleep
// on the ring's futex. No syscall at all while both sides are spinning.
#include "kvpager/tp/broadcaster.hpp"

namespace kvpager::tp {

namespace {

class ShmBroadcaster final : public Broadcaster {
 public:
  explicit ShmBroadcaster(Links links) : links_(links) {}

  void broadcast(const Command& command, RankMask ranks, std::span<Reply> replies,
                 Clock::time_point deadline) override {
    for (size_t r = 0; r < links_.size(); ++r) {
      if (ranks >> r & 1) links_[r]->post(command);
    }
    for (size_t r = 0; r < links_.size(); ++r) {
      if (ranks >> r & 1) links_[r]->await(replies[r], deadline);
    }
  }

 private:
  Links links_;
};

}  // namespace

std::unique_ptr<Broadcaster> make_shm_broadcaster(Links links) {
  return std::make_unique<ShmBroadcaster>(links);
}

}  // namespace kvpager::tp

// seq: one rank after another over UNIX sockets (the seed's sequential loop): post to rank r,
// wait for its reply, then rank r+1. Latency is the sum over ranks. Each rank gets the whole
// timeout (deadline - start) from its own post: a rank that timed out used up its own time,
// not the time of the ranks after it.
#include <algorithm>

#include "kvpager/tp/broadcaster.hpp"

namespace kvpager::tp {

namespace {

class SeqBroadcaster final : public Broadcaster {
 public:
  explicit SeqBroadcaster(Links links) : links_(links) {}

  void broadcast(const Command& command, RankMask ranks, std::span<Reply> replies,
                 Clock::time_point deadline) override {
    const Clock::duration span = deadline - Clock::now();
    for (size_t r = 0; r < links_.size(); ++r) {
      if ((ranks >> r & 1) == 0) continue;
      links_[r]->post(command);
      links_[r]->await(replies[r], std::max(deadline, Clock::now() + span));
    }
  }

 private:
  Links links_;
};

}  // namespace

std::unique_ptr<Broadcaster> make_seq_broadcaster(Links links) {
  return std::make_unique<SeqBroadcaster>(links);
}

}  // namespace kvpager::tp

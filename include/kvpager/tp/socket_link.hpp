#pragma once
// SocketLink: a RankLink over an AF_UNIX SOCK_SEQPACKET socketpair (one message per command
// or reply; EOF when the worker dies). The pair has no name in the filesystem, both ends are
// SOCK_CLOEXEC, and the worker's end is closed in the scheduler right after the spawn, so a
// dead worker is seen as end-of-file at once and nothing is left behind.
#include "kvpager/tp/rank_link.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

class SocketLink final : public RankLink {
 public:
  // Spawns the worker for `rank` with `args`; the channel is its fd 3, extra_fds follow.
  SocketLink(RankId rank, const std::string& binary, const std::vector<std::string>& args,
             const std::vector<int>& extra_fds);
  // A rank whose server this process connected to (unix_channel.hpp: connect_channel); the
  // peer's pid comes from SO_PEERCRED.
  SocketLink(RankId rank, UniqueFd connected);
  Transport transport() const override { return Transport::kSocket; }

  void post(const Command& command) override;
  void await(Reply& out, Clock::time_point deadline) override;

  // For an event loop: the socket, and a non-blocking read of whatever is there. Returns true
  // when `out` is final (the reply, or kDied), false when nothing has arrived yet.
  int fd() const { return fd_.get(); }
  [[nodiscard]] bool try_receive(Reply& out);

 private:
  void close_channel() override;

  UniqueFd fd_;
  bool post_failed_ = false;
};

}  // namespace kvpager::tp

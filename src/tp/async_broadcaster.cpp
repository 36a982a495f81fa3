// async: every rank's UNIX socket multiplexed with epoll from the calling thread (the seed's
// asyncio version): post to all ranks, then read replies in whatever order they come.
#include <sys/epoll.h>

#include <cerrno>
#include <vector>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/broadcaster.hpp"
#include "kvpager/tp/socket_link.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

namespace {

class AsyncBroadcaster final : public Broadcaster {
 public:
  explicit AsyncBroadcaster(Links links) : epoll_(epoll_create1(EPOLL_CLOEXEC)) {
    if (!epoll_.valid()) throw_errno("epoll_create1", errno, "tp async broadcaster");
    for (size_t r = 0; r < links.size(); ++r) {
      auto* link = dynamic_cast<SocketLink*>(links[r].get());
      if (link == nullptr) throw InvalidArgument("tp async broadcaster needs socket links");
      links_.push_back(link);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<uint32_t>(r);
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, link->fd(), &ev) != 0) {
        throw_errno("epoll_ctl", errno, "tp async broadcaster");
      }
    }
    events_.resize(links_.size());
  }

  void broadcast(const Command& command, RankMask ranks, std::span<Reply> replies,
                 Clock::time_point deadline) override {
    RankMask pending = 0;
    for (size_t r = 0; r < links_.size(); ++r) {
      if ((ranks >> r & 1) == 0) continue;
      links_[r]->post(command);
      pending |= RankMask{1} << r;
    }
    while (pending != 0) {
      const auto now = Clock::now();
      int wait_ms = 0;
      if (now < deadline) {
        wait_ms =
            static_cast<int>(
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) +
            1;
      }
      const int n = epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()),
                               now < deadline ? wait_ms : 0);
      if (n < 0 && errno == EINTR) continue;
      for (int i = 0; i < n; ++i) {
        const uint32_t r = events_[i].data.u32;
        if ((pending >> r & 1) == 0) continue;
        if (links_[r]->try_receive(replies[r])) pending &= ~(RankMask{1} << r);
      }
      if (n <= 0 && Clock::now() >= deadline) {
        for (size_t r = 0; r < links_.size(); ++r) {
          if ((pending >> r & 1) == 0) continue;
          if (!links_[r]->try_receive(replies[r])) links_[r]->fail_timeout(replies[r]);
        }
        return;
      }
    }
  }

 private:
  UniqueFd epoll_;
  std::vector<SocketLink*> links_;
  std::vector<epoll_event> events_;
};

}  // namespace

std::unique_ptr<Broadcaster> make_async_broadcaster(Links links) {
  return std::make_unique<AsyncBroadcaster>(links);
}

}  // namespace kvpager::tp

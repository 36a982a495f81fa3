#include "kvpager/tp/socket_link.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/unix_channel.hpp"

namespace kvpager::tp {

SocketLink::SocketLink(RankId rank, const std::string& binary, const std::vector<std::string>& args,
                       const std::vector<int>& extra_fds) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    throw_errno("socketpair", errno, "tp rank " + std::to_string(rank.value));
  }
  rank_ = rank;
  fd_.reset(pair[0]);
  UniqueFd worker_end(pair[1]);
  std::vector<int> fds = {worker_end.get()};
  fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
  process_ = std::make_unique<WorkerProcess>(rank, binary, args, fds);
  pid_ = process_->pid();
  // worker_end closes here: the worker holds the only other end, so its death is EOF.
}

SocketLink::SocketLink(RankId rank, UniqueFd connected) : fd_(std::move(connected)) {
  rank_ = rank;
  pid_ = peer_credentials(fd_.get()).pid;
}

void SocketLink::close_channel() {
  fd_.reset();
  post_failed_ = true;  // later posts and awaits see a closed channel
}

void SocketLink::post(const Command& command) {
  ++seq_;
  posted_at_ = Clock::now();
  // The command is shared by every rank's sender: the stamped header goes from a local copy,
  // the page list in place (one message, two pieces).
  Command header;
  header.seq = seq_;
  header.kind = command.kind;
  header.count = command.count;
  iovec iov[2] = {{&header, Command::kHeaderBytes},
                  {const_cast<uint32_t*>(command.pages), command.count * sizeof(uint32_t)}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = command.count > 0 ? 2 : 1;
  ssize_t n;
  do {
    n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  post_failed_ = n != static_cast<ssize_t>(command.wire_bytes());
}

bool SocketLink::try_receive(Reply& out) {
  if (post_failed_) {
    fail_died(out, "(its channel refused the command)");
    return true;
  }
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), &out, sizeof out, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n <= 0) {
      fail_died(out, "(its channel closed)");
      return true;
    }
    if (n != static_cast<ssize_t>(sizeof out)) {
      out.status = ReplyStatus::kProtocol;
      copy_text(out.message, "rank " + std::to_string(rank().value) +
                                 " sent a malformed reply of " + std::to_string(n) + " bytes");
      return true;
    }
    if (out.seq == seq_) return true;
    // A reply to an older command cannot happen on a healthy link (strict alternation).
    out.status = ReplyStatus::kProtocol;
    copy_text(out.message, "rank " + std::to_string(rank().value) + " answered command " +
                               std::to_string(out.seq) + " while " + std::to_string(seq_) +
                               " was expected");
    return true;
  }
}

void SocketLink::await(Reply& out, Clock::time_point deadline) {
  for (;;) {
    if (try_receive(out)) return;
    const auto now = Clock::now();
    if (now >= deadline) {
      fail_timeout(out);
      return;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    const int r = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (r < 0 && errno != EINTR) {
      fail_died(out, ("(poll failed: " + std::string(std::strerror(errno)) + ")").c_str());
      return;
    }
  }
}

}  // namespace kvpager::tp

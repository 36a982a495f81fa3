#include "kvpager/tp/unix_channel.hpp"

#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>

#include "kvpager/common/error.hpp"

namespace kvpager::tp {

namespace {

constexpr size_t kMaxToken = 64;
constexpr auto kRetry = std::chrono::milliseconds(10);

socklen_t abstract_address(const std::string& name, sockaddr_un& addr) {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof addr.sun_path) {
    throw InvalidArgument("tp channel name '" + name + "' is too long");
  }
  addr.sun_path[0] = '\0';  // abstract: no file
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

UniqueFd seqpacket_socket(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw_errno("socket", errno, "tp channel " + name);
  return fd;
}

}  // namespace

std::string rank_channel_name(const std::string& token, RankId rank) {
  bool ok = !token.empty() && token.size() <= kMaxToken;
  for (const char c : token) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    throw InvalidArgument("tp channel token '" + token + "' must be 1.." +
                          std::to_string(kMaxToken) + " characters of [A-Za-z0-9._-]");
  }
  return "kvpager-tp/" + token + "/" + std::to_string(rank.value);
}

ucred peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw_errno("getsockopt", errno, "SO_PEERCRED of a tp channel");
  }
  return cred;
}

UniqueFd listen_channel(const std::string& name) {
  UniqueFd fd = seqpacket_socket(name);
  sockaddr_un addr;
  const socklen_t len = abstract_address(name, addr);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    if (errno == EADDRINUSE) {
      throw InvalidArgument("tp channel '" + name +
                            "' is taken: another rank server listens on it (a second engine "
                            "with the same token, or this rank started twice)");
    }
    throw_errno("bind", errno, "tp channel " + name);
  }
  if (::listen(fd.get(), 4) != 0) throw_errno("listen", errno, "tp channel " + name);
  return fd;
}

UniqueFd connect_channel(const std::string& name, std::chrono::steady_clock::time_point deadline) {
  sockaddr_un addr;
  const socklen_t len = abstract_address(name, addr);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    UniqueFd fd = seqpacket_socket(name);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
      const ucred cred = peer_credentials(fd.get());
      if (cred.uid != ::geteuid()) {
        throw StateError("tp channel '" + name + "' is served by pid " + std::to_string(cred.pid) +
                         " of uid " + std::to_string(cred.uid) + ", not by this uid (" +
                         std::to_string(::geteuid()) + "): refused");
      }
      return fd;
    }
    const int err = errno;
    // Nobody listens yet (ECONNREFUSED), or its backlog is full (EAGAIN): the rank may still
    // be starting.
    if (err != ECONNREFUSED && err != EAGAIN && err != EINTR && err != ENOENT) {
      throw_errno("connect", err, "tp channel " + name);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - start)
                              .count();
      throw Timeout("no tp rank server listens on '" + name + "' after " + std::to_string(waited) +
                    " ms: start that rank's server (TpRankServer) with the same token, or check "
                    "the token and tp size");
    }
    std::this_thread::sleep_for(kRetry);
  }
}

}  // namespace kvpager::tp

#pragma once
// Named channels between a tp scheduler and rank servers it did not spawn (the ranks live in
// a serving engine's own worker processes): AF_UNIX SOCK_SEQPACKET sockets in the *abstract*
// namespace, so nothing exists in the filesystem and nothing is left behind after a crash.
// The name is "kvpager-tp/<token>/<rank>"; the token is chosen per engine (e.g. by the process
// that starts the workers) so that two engines never meet.
//
// Both ends check the peer with SO_PEERCRED: only a process of the same effective uid is
// accepted (a listener refuses others by closing their connection before any message; a
// connector throws StateError). Every descriptor is close-on-exec.
// Errors: InvalidArgument for a malformed token, DriverError (errno) for a failed syscall,
// Timeout when no server listens by the deadline, InvalidArgument when one already listens
// on a name (another engine with the same token).
#include <sys/socket.h>

#include <chrono>
#include <string>

#include "kvpager/common/ids.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

// "kvpager-tp/<token>/<rank>"; the token is 1..64 characters of [A-Za-z0-9._-].
std::string rank_channel_name(const std::string& token, RankId rank);

// Binds and listens on the abstract name.
UniqueFd listen_channel(const std::string& name);
// Connects to the abstract name, retrying while nobody listens yet, until `deadline`; checks
// that the server runs under this process's uid.
UniqueFd connect_channel(const std::string& name, std::chrono::steady_clock::time_point deadline);

// SO_PEERCRED of a connected AF_UNIX socket.
ucred peer_credentials(int fd);

}  // namespace kvpager::tp

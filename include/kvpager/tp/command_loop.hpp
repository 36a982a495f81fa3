#pragma once
// The worker side's socket command loop, shared by the spawned `kvpager tp-worker` and the
// in-process RankServer: receive one command, execute it, send its reply, until a shutdown
// command (replied to first) or until the scheduler is gone (end of file, a failed send, or
// the socket shut down by the loop's owner).
// A malformed message gets a kInvalidArgument reply and the loop goes on.
// Hot path: no allocation; one recv and one send per command.
// Thread safety: one loop per socket; `guard`, when given, is held around each execute (for an
// owner that also runs commands on the same executor from another thread).
#include <mutex>

#include "kvpager/tp/command_executor.hpp"
#include "kvpager/tp/protocol.hpp"

namespace kvpager::tp {

enum class LoopEnd { kShutdown, kSchedulerGone };

// Sends one reply; false when the peer is gone.
bool send_reply(int fd, const Reply& reply);

// `served`, when given, counts the commands executed (malformed ones not included).
LoopEnd serve_socket(int fd, CommandExecutor& executor, std::mutex* guard = nullptr,
                     uint64_t* served = nullptr);

}  // namespace kvpager::tp

#pragma once
// RankLink: the scheduler's end of one worker: the channel to it and, for a worker this
// process spawned (`kvpager tp-worker`), the worker process. A rank that connected instead (a
// RankServer inside a serving engine's own worker process) is not ours: dropping it closes the
// channel, which ends its server's session. Broadcast strategies talk to workers only through
// links; the transport (UNIX socket or shared-memory ring) is the link's business.
//
// Protocol per link: post() one command, then await() its reply, strictly alternating (the
// hello, seq 0, is awaited before the first post). A link stamps its own sequence numbers.
// Failures never throw from post/await: await() fills the reply with kTimeout or kDied and a
// message naming the rank and pid, and the link is broken from then on.
// Thread safety: one thread at a time per link; different links may be used concurrently.
#include <chrono>
#include <memory>
#include <string>

#include "kvpager/common/ids.hpp"
#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/tp/worker_process.hpp"

namespace kvpager::tp {

using Clock = std::chrono::steady_clock;

class RankLink {
 public:
  virtual ~RankLink() = default;
  virtual Transport transport() const = 0;

  RankId rank() const { return rank_; }
  pid_t pid() const { return pid_; }  // the worker's (spawned, or the peer's SO_PEERCRED pid)

  // The rank is out for good: a spawned worker is killed and reaped, a connected one's channel
  // closed. Idempotent.
  void drop();
  // True once the rank is gone (a spawned worker exited; a connected one was dropped).
  bool gone();
  // Waits up to `limit` for a spawned worker to exit (a connected rank: returns at once).
  void wait_gone(std::chrono::milliseconds limit);

  // Sends `command` (only its wire_bytes()) stamped with the next sequence number.
  // Hot path: no allocation; one syscall for sockets, none for shm unless the worker sleeps.
  virtual void post(const Command& command) = 0;
  // Waits until the reply to the last posted command (or the hello) arrives or `deadline`
  // passes. Fills `out` in every case.
  virtual void await(Reply& out, Clock::time_point deadline) = 0;

  // Fills `out` as kDied (the worker is gone: its exit described) or kTimeout.
  void fail_died(Reply& out, const char* when);
  void fail_timeout(Reply& out);

 protected:
  virtual void close_channel() = 0;

  RankId rank_;
  pid_t pid_ = -1;
  std::unique_ptr<WorkerProcess> process_;  // null for a rank that connected
  bool dropped_ = false;
  uint64_t seq_ = 0;                            // of the last posted command
  Clock::time_point posted_at_ = Clock::now();  // when it was posted (or the link made)
};

}  // namespace kvpager::tp

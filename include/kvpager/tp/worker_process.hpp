#pragma once
// WorkerProcess: one tp worker as a child process (fork + exec of the kvpager binary), owned
// for its whole life. The child inherits exactly the descriptors it is given, as fd 3, 4, ...
// (the channel first; everything else the scheduler holds is close-on-exec),
// PR_SET_PDEATHSIG(SIGKILL) and an empty signal mask; no CUDA state crosses the fork because the
// child execs at once. PR_SET_PDEATHSIG fires when the *thread* that spawned the worker ends, so
// create workers on a thread that outlives them (workers also exit when their channel says the
// scheduler is gone).
//
// Ownership: the destructor SIGKILLs a worker that still runs and reaps it: no zombies.
// Thread safety: all methods are thread-safe.
// Errors: the constructor throws DriverError when fork fails; exec failure shows up as exit
// status 127.
#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "kvpager/common/ids.hpp"

namespace kvpager::tp {

inline constexpr int kWorkerChannelFd = 3;

class WorkerProcess {
 public:
  // Runs `binary` with `args` (args[0] is argv[0]); fds[i] becomes fd 3 + i in the child.
  WorkerProcess(RankId rank, const std::string& binary, const std::vector<std::string>& args,
                const std::vector<int>& fds);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  RankId rank() const { return rank_; }
  pid_t pid() const { return pid_; }
  // Non-blocking: reaps the child when it has exited. True once it has.
  bool exited();
  // Waits up to `limit` for the child to exit; true when it has (reaped).
  bool wait_exit(std::chrono::milliseconds limit);
  // SIGKILL (when still running) and reap. Idempotent.
  void kill_and_reap();
  // "exited with status 3", "killed by signal 9 (SIGKILL)", or "running".
  std::string exit_description();

 private:
  bool poll_locked();

  RankId rank_;
  std::string binary_;
  pid_t pid_ = -1;
  std::mutex mutex_;
  bool reaped_ = false;
  int wait_status_ = 0;
};

}  // namespace kvpager::tp

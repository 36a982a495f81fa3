#include "kvpager/tp/tp_worker.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "kvpager/tp/command_executor.hpp"
#include "kvpager/tp/command_loop.hpp"
#include "kvpager/tp/device_lock.hpp"
#include "kvpager/tp/shm_ring.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

namespace {

// How often a sleeping worker checks that its scheduler is still there.
constexpr std::chrono::milliseconds kParentCheck{100};

int serve_shm(ShmRing& ring, CommandExecutor& executor, pid_t parent,
              std::chrono::nanoseconds spin) {
  const auto never = std::chrono::steady_clock::time_point::max();
  for (uint32_t seq = 1;; ++seq) {
    const WaitResult r = wait_for(ring.posted, ring.worker_waiting, seq, spin, never, kParentCheck,
                                  [&] { return getppid() != parent; });
    if (r != WaitResult::kReady) return 0;
    const Command& command = ring.commands[seq % ShmRing::kDepth];
    const CommandKind kind = command.kind;
    executor.execute(command, ring.replies[seq % ShmRing::kDepth]);
    publish(ring.replied, ring.scheduler_waiting, seq + 1);
    if (kind == CommandKind::kShutdown) return 0;
  }
}

}  // namespace

int run_worker(const WorkerLaunch& launch) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (launch.parent_pid != 0 && getppid() != launch.parent_pid) return 0;
  UniqueFd channel(launch.channel_fd);
  const FaultSpec fault =
      launch.fault.rank == static_cast<int>(launch.rank.value) ? launch.fault : FaultSpec{};

  std::unique_ptr<ShmSegment> segment;
  if (launch.transport == Transport::kShm)
    segment = std::make_unique<ShmSegment>(std::move(channel));

  std::unique_ptr<DeviceLock> device_lock;
  std::unique_ptr<CommandExecutor> executor;
  Reply hello;
  try {
    if (launch.device_lock_fd >= 0) {
      device_lock = std::make_unique<DeviceLock>(UniqueFd(launch.device_lock_fd));
    }
    executor = std::make_unique<CommandExecutor>(launch.config, fault, device_lock.get());
    executor->hello(hello);
  } catch (...) {
    reply_from_current_exception(hello);
  }
  hello.seq = 0;

  if (segment) {
    ShmRing& ring = segment->ring();
    ring.replies[0] = hello;
    publish(ring.replied, ring.scheduler_waiting, 1);
    if (!executor) return 1;
    return serve_shm(ring, *executor, launch.parent_pid,
                     std::chrono::microseconds(launch.config.spin_us));
  }
  if (!send_reply(channel.get(), hello) || !executor) return executor ? 0 : 1;
  serve_socket(channel.get(), *executor);
  return 0;
}

}  // namespace kvpager::tp

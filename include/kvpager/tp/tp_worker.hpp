#pragma once
// The tp worker process: `kvpager tp-worker ...` (a hidden subcommand) runs run_worker().
// It builds the rank's KV tensors, sends the hello, and executes commands from its channel
// (fd 3) until a shutdown command, or until the scheduler is gone (end of file on the socket,
// or the parent pid changed while waiting on the ring). PR_SET_PDEATHSIG is set before exec.
#include <sys/types.h>

#include <string>
#include <vector>

#include "kvpager/common/ids.hpp"
#include "kvpager/tp/tp_config.hpp"

namespace kvpager::tp {

struct WorkerLaunch {
  RankId rank;
  Transport transport = Transport::kShm;
  int channel_fd = 3;
  pid_t parent_pid = 0;     // the worker exits when its parent changes
  int device_lock_fd = -1;  // an inherited DeviceLock shared with the ranks of this device
  WorkerConfig config;      // config.backend.device is this rank's device
  FaultSpec fault;          // applies when fault.rank == rank
};

// The command line that makes `kvpager tp-worker` rebuild `launch` (argv[0] included).
std::vector<std::string> worker_command_line(const WorkerLaunch& launch);
// The inverse, from the arguments after "tp-worker"; InvalidArgument for anything unknown.
WorkerLaunch parse_worker_command_line(const std::vector<std::string>& args);

// Runs the worker loop; returns the process exit status (0 after a shutdown command or when
// the scheduler went away, 1 when the KV tensors could not be created).
int run_worker(const WorkerLaunch& launch);

}  // namespace kvpager::tp

#pragma once
// StopSignals: while one lives, SIGINT, SIGTERM and SIGHUP do not kill the process: the first
// one is recorded (stop_signal()) so a long-running command can stop at its next check and
// clean up (unregister, stop its children, remove its segments) before it exits with
// 128 + signal. Installed without SA_RESTART, so a blocking read or poll returns EINTR and the
// caller gets to check. The destructor restores the previous handlers.
// Thread safety: one StopSignals per process at a time; stop_signal() may be read anywhere.
#include <signal.h>

#include <string>

namespace kvpager::cli {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// The first stop signal received while a StopSignals lived, or 0.
int stop_signal() noexcept;

// "SIGKILL" for 9; "signal 77" for one without a name.
std::string signal_name(int sig);

}  // namespace kvpager::cli

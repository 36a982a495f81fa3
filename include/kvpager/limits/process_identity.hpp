#pragma once
// Which process owns a registry entry, robust against pid reuse: the pid plus the process's
// start time (/proc/<pid>/stat field 22, clock ticks after boot).
// Thread safety: free functions, thread-safe. They make syscalls: never on a hot path.
#include <sys/types.h>
#include <cstdint>

namespace kvpager::limits {

struct ProcessIdentity {
  pid_t pid = 0;
  uint64_t start_time = 0;  // 0: unknown (no /proc)
};

ProcessIdentity current_process();
// Start time of `pid`, 0 when the process does not exist or /proc cannot tell.
uint64_t process_start_time(pid_t pid);
// True while the process exists and (when both start times are known) is the same process.
// A process of another user counts as alive (kill(2) answers EPERM).
bool is_alive(const ProcessIdentity& who);
// The state letter of /proc/<pid>/stat ('R', 'S', 'T' stopped, 't' traced, 'Z', ...); 0 when
// the process does not exist or /proc cannot tell.
char process_state(pid_t pid);
// CLOCK_MONOTONIC in nanoseconds (vDSO: no syscall on Linux x86-64/aarch64).
uint64_t monotonic_ns();

}  // namespace kvpager::limits

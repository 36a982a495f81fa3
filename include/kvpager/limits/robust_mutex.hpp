#pragma once
// A pthread mutex that lives in shared memory and survives the death of its holder: it is
// process-shared and robust, so when a process dies holding it (SIGKILL included) the next
// locker gets EOWNERDEAD, marks it consistent and carries on. The data it guards must stay
// consistent after every single store (the registry's is: each slot field is one atomic), so
// recovery has nothing to repair; it only counts the event.
//
// Every wait is bounded: a holder that lives but does not let go (stopped by SIGSTOP or a
// debugger, hung) or a lock word that is garbage makes the locker give up after `timeout`
// with a Timeout naming who holds the lock and for how long. A holder records itself (pid and
// CLOCK_MONOTONIC time of taking it) in words beside the mutex, so that a waiter can tell.
// Errors: Timeout as above; StateError when the mutex is unusable (ENOTRECOVERABLE, memory
// that holds no valid mutex, or a lock word naming this very thread); DriverError for other
// pthread failures.
// Cost: an uncontended lock is the mutex's own atomic fast path plus two relaxed stores; the
// holder's pid is the caller's (no getpid here).
#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvpager::limits {

// Initialises `m` in place (memory of a segment not yet published).
void init_robust_mutex(pthread_mutex_t* m);

// Where a lock keeps its bookkeeping, all optional (nullptr: not kept).
struct LockRecord {
  std::atomic<uint64_t>* recoveries = nullptr;     // bumped per takeover from a dead owner
  std::atomic<int32_t>* holder_pid = nullptr;      // the holder's pid while held, else 0
  std::atomic<uint64_t>* held_since_ns = nullptr;  // when the holder took it (CLOCK_MONOTONIC)
};

struct LockOptions {
  std::chrono::milliseconds timeout{2000};  // RegistryConfig::lock_timeout
  pid_t self = 0;                           // recorded as holder_pid
  std::string_view what = "registry lock";  // named in errors (must outlive the lock)
};

// RAII lock. Never throws from the destructor.
class RobustLock {
 public:
  explicit RobustLock(pthread_mutex_t* m, LockRecord record = {}, const LockOptions& options = {});
  ~RobustLock();
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  bool recovered() const { return recovered_; }

 private:
  pthread_mutex_t* m_;
  LockRecord record_;
  bool recovered_ = false;
};

// The sentence a Timeout carries: who holds the lock (from the record) and for how long, or
// that no live process does (a garbage lock word), and what to do. For tools and tests.
std::string lock_holder_report(const LockRecord& record, const LockOptions& options,
                               std::chrono::milliseconds waited);

}  // namespace kvpager::limits

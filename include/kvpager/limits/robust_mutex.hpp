#pragma once
// A pthread mutex that lives in shared memory and survives the death of its holder: it is
// process-shared and robust, so when a process dies holding it (SIGKILL included) the next
// locker gets EOWNERDEAD, marks it consistent and carries on. The data it guards must stay
// consistent after every single store (the registry's is: each slot field is one atomic), so
// recovery has nothing to repair; it only counts the event.
// Errors: StateError when the mutex is unusable (ENOTRECOVERABLE, or memory that holds no
// initialised mutex); DriverError for other pthread failures.
#include <pthread.h>

#include <atomic>
#include <cstdint>

namespace kvpager::limits {

// Initialises `m` in place (memory of a segment not yet published).
void init_robust_mutex(pthread_mutex_t* m);

// RAII lock. `recoveries`, when given, is bumped each time the lock is taken over from a dead
// owner. Never throws from the destructor.
class RobustLock {
 public:
  explicit RobustLock(pthread_mutex_t* m, std::atomic<uint64_t>* recoveries = nullptr);
  ~RobustLock();
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  bool recovered() const { return recovered_; }

 private:
  pthread_mutex_t* m_;
  bool recovered_ = false;
};

}  // namespace kvpager::limits

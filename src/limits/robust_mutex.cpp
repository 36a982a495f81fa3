#include "kvpager/limits/robust_mutex.hpp"

#include <cerrno>
#include <cstring>

#include "kvpager/common/error.hpp"

namespace kvpager::limits {

void init_robust_mutex(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  if (int rc = pthread_mutexattr_init(&attr)) throw_errno("pthread_mutexattr_init", rc);
  struct Destroy {
    pthread_mutexattr_t* a;
    ~Destroy() { pthread_mutexattr_destroy(a); }
  } destroy{&attr};
  if (int rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED))
    throw_errno("pthread_mutexattr_setpshared", rc);
  if (int rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST))
    throw_errno("pthread_mutexattr_setrobust", rc);
  if (int rc = pthread_mutex_init(m, &attr)) throw_errno("pthread_mutex_init", rc);
}

RobustLock::RobustLock(pthread_mutex_t* m, std::atomic<uint64_t>* recoveries) : m_(m) {
  int rc = pthread_mutex_lock(m_);
  if (rc == EOWNERDEAD) {
    // The previous holder died inside its critical section. Every guarded field is a single
    // atomic store, so the state is consistent as it is.
    if (int c = pthread_mutex_consistent(m_)) throw_errno("pthread_mutex_consistent", c);
    recovered_ = true;
    if (recoveries) recoveries->fetch_add(1, std::memory_order_relaxed);
    rc = 0;
  }
  if (rc == ENOTRECOVERABLE) {
    throw StateError(
        "registry lock is not recoverable (a holder died and the lock was then "
        "released without being made consistent); remove the device segment");
  }
  if (rc == EINVAL) throw StateError("registry lock memory holds no valid mutex (corrupt segment)");
  if (rc != 0) throw_errno("pthread_mutex_lock", rc);
}

RobustLock::~RobustLock() {
  pthread_mutex_unlock(m_);
}

}  // namespace kvpager::limits

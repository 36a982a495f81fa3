#include "kvpager/limits/robust_mutex.hpp"

#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kvpager/common/error.hpp"
#include "kvpager/limits/process_identity.hpp"

namespace kvpager::limits {

namespace {

timespec deadline_after(std::chrono::milliseconds timeout) {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t ms = timeout.count();
  ts.tv_sec += static_cast<time_t>(ms / 1000);
  ts.tv_nsec += static_cast<long>((ms % 1000) * 1'000'000);
  if (ts.tv_nsec >= 1'000'000'000) {
    ts.tv_sec += 1;
    ts.tv_nsec -= 1'000'000'000;
  }
  return ts;
}

// The mutex type init_robust_mutex() makes, as glibc stores it (the format pins glibc's ABI).
// A lock whose type word differs is not handed to pthread at all: glibc trusts that word, and
// garbage there (a priority-inheritance type, say) can make it wait forever or abort.
int robust_kind() {
  static const int kind = [] {
    pthread_mutex_t m;
    init_robust_mutex(&m);
    const int k = m.__data.__kind;
    pthread_mutex_destroy(&m);
    return k;
  }();
  return kind;
}

std::string seconds(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ns) / 1e9);
  return buf;
}

}  // namespace

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

std::string lock_holder_report(const LockRecord& record, const LockOptions& options,
                               std::chrono::milliseconds waited) {
  const pid_t pid = record.holder_pid ? record.holder_pid->load(std::memory_order_relaxed) : 0;
  const uint64_t since =
      record.held_since_ns ? record.held_since_ns->load(std::memory_order_relaxed) : 0;
  const uint64_t now = monotonic_ns();
  const std::string what(options.what);
  const std::string wait =
      "gave up after " + std::to_string(waited.count()) + " ms (KVPAGER_LOCK_TIMEOUT_MS)";
  if (pid > 0 && is_alive({pid, 0})) {
    const char state = process_state(pid);
    const bool stopped = state == 'T' || state == 't';
    std::string held = "held by pid " + std::to_string(pid);
    if (since != 0 && since <= now) held += " for " + seconds(now - since);
    return what + " is " + held + (stopped ? " (stopped: SIGSTOP or a debugger)" : "") + "; " +
           wait + ". Let that process continue (kill -CONT " + std::to_string(pid) +
           ") or end it: a lock whose holder is killed is recovered by the next locker";
  }
  return what + " is held, but no live process holds it" +
         (pid > 0 ? " (its last holder, pid " + std::to_string(pid) + ", is gone)"
                  : std::string(" (no holder recorded)")) +
         ": the lock word is garbage; " + wait +
         ". Remove the segment once no kvpager process uses it";
}

RobustLock::RobustLock(pthread_mutex_t* m, LockRecord record, const LockOptions& options)
    : m_(m), record_(record) {
  if (__atomic_load_n(&m_->__data.__kind, __ATOMIC_RELAXED) != robust_kind()) {
    throw StateError(std::string(options.what) +
                     " is not a robust process-shared mutex (its type word is garbage): the "
                     "segment is corrupt; remove it once no kvpager process uses it");
  }
  int rc = pthread_mutex_trylock(m_);  // the uncontended case: no clock read, no syscall
  if (rc == EBUSY) {
#if defined(__SANITIZE_THREAD__)
    // GCC 12's ThreadSanitizer does not intercept pthread_mutex_clocklock (it would then see an
    // unlock of a mutex never locked): there, wait on the realtime clock instead.
    timespec deadline{};
    clock_gettime(CLOCK_REALTIME, &deadline);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(options.timeout).count();
    deadline.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
    deadline.tv_nsec += static_cast<long>(ns % 1'000'000'000);
    if (deadline.tv_nsec >= 1'000'000'000) {
      deadline.tv_sec += 1;
      deadline.tv_nsec -= 1'000'000'000;
    }
    rc = pthread_mutex_timedlock(m_, &deadline);
#else
    const timespec deadline = deadline_after(options.timeout);
    rc = pthread_mutex_clocklock(m_, CLOCK_MONOTONIC, &deadline);
#endif
  }
  if (rc == EOWNERDEAD) {
    // The previous holder died inside its critical section. Every guarded field is a single
    // atomic store, so the state is consistent as it is.
    if (int c = pthread_mutex_consistent(m_)) {
      pthread_mutex_unlock(m_);
      throw_errno("pthread_mutex_consistent", c);
    }
    recovered_ = true;
    if (record_.recoveries) record_.recoveries->fetch_add(1, std::memory_order_relaxed);
    rc = 0;
  }
  if (rc == ETIMEDOUT) {
    throw Timeout(lock_holder_report(record_, options, options.timeout));
  }
  if (rc == ENOTRECOVERABLE) {
    throw StateError(std::string(options.what) +
                     " is not recoverable (a holder died and the lock was then released "
                     "without being made consistent); remove the device segment");
  }
  if (rc == EINVAL || rc == EDEADLK || rc == EAGAIN || rc == EPERM) {
    throw StateError(std::string(options.what) + " holds no valid mutex (" + std::strerror(rc) +
                     "): the segment is corrupt; remove it once no kvpager "
                     "process uses it");
  }
  if (rc != 0) throw_errno("pthread_mutex_lock", rc, std::string(options.what));
  if (record_.holder_pid) record_.holder_pid->store(options.self, std::memory_order_relaxed);
  if (record_.held_since_ns) {
    record_.held_since_ns->store(monotonic_ns(), std::memory_order_relaxed);
  }
}

RobustLock::~RobustLock() {
  if (record_.held_since_ns) record_.held_since_ns->store(0, std::memory_order_relaxed);
  if (record_.holder_pid) record_.holder_pid->store(0, std::memory_order_relaxed);
  pthread_mutex_unlock(m_);
}

}  // namespace kvpager::limits

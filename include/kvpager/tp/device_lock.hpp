#pragma once
// DeviceLock: serialises the map/unmap work of worker processes that share one device.
//
// The CUDA driver serialises VMM calls per device anyway, and processes that contend for it
// lose time (shared/ANCHORS.md, "One GPU": 4 processes x 25 pages took 2.4-7.8 ms each, one
// process 2.67 ms for all 100). So ranks on the same device take turns: a worker holds the lock
// for one whole map or unmap command. The lock is a process-shared, robust pthread mutex in a
// memfd that the scheduler creates and every worker of that device inherits; a worker that dies
// holding it does not block the others (EOWNERDEAD is recovered). lock() spins with trylock for
// `spin` before it sleeps. Hot path: no allocation; a futex call only under contention.
#include <pthread.h>

#include <chrono>

#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

class DeviceLock {
 public:
  // Scheduler side: a fresh memfd holding an initialised mutex.
  DeviceLock();
  // Worker side: maps the lock behind `fd` (taken over); InvalidArgument when it is not one.
  explicit DeviceLock(UniqueFd fd);
  ~DeviceLock();
  DeviceLock(const DeviceLock&) = delete;
  DeviceLock& operator=(const DeviceLock&) = delete;

  int fd() const { return fd_.get(); }
  void lock(std::chrono::nanoseconds spin);
  void unlock();

 private:
  struct Shared;
  UniqueFd fd_;
  Shared* shared_ = nullptr;
};

class DeviceLockGuard {
 public:
  DeviceLockGuard(DeviceLock* lock, std::chrono::nanoseconds spin) : lock_(lock) {
    if (lock_ != nullptr) lock_->lock(spin);
  }
  ~DeviceLockGuard() {
    if (lock_ != nullptr) lock_->unlock();
  }
  DeviceLockGuard(const DeviceLockGuard&) = delete;
  DeviceLockGuard& operator=(const DeviceLockGuard&) = delete;

 private:
  DeviceLock* lock_;
};

}  // namespace kvpager::tp

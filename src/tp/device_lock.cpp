#include "kvpager/tp/device_lock.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <new>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/shm_ring.hpp"

namespace kvpager::tp {

struct DeviceLock::Shared {
  static constexpr uint32_t kMagic = 0x6b76646c;  // "kvdl"
  uint32_t magic = kMagic;
  pthread_mutex_t mutex;
};

DeviceLock::DeviceLock() {
  fd_.reset(memfd_create("kvpager-tp-device-lock", MFD_CLOEXEC));
  if (!fd_.valid()) throw_errno("memfd_create", errno, "tp device lock");
  if (ftruncate(fd_.get(), sizeof(Shared)) != 0) throw_errno("ftruncate", errno, "tp device lock");
  void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno("mmap", errno, "tp device lock");
  shared_ = new (p) Shared();
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int rc = pthread_mutex_init(&shared_->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw_errno("pthread_mutex_init", rc, "tp device lock");
}

DeviceLock::DeviceLock(UniqueFd fd) : fd_(std::move(fd)) {
  struct stat st {};
  if (fstat(fd_.get(), &st) != 0) throw_errno("fstat", errno, "tp device lock");
  if (static_cast<size_t>(st.st_size) != sizeof(Shared)) {
    throw InvalidArgument("tp device lock fd " + std::to_string(fd_.get()) + " is not a lock");
  }
  void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno("mmap", errno, "tp device lock");
  shared_ = static_cast<Shared*>(p);
  if (shared_->magic != Shared::kMagic) {
    munmap(p, sizeof(Shared));
    shared_ = nullptr;
    throw InvalidArgument("tp device lock fd is not a lock of this kvpager build");
  }
  fd_.reset();  // the mapping is all a worker needs
}

DeviceLock::~DeviceLock() {
  if (shared_ != nullptr) munmap(shared_, sizeof(Shared));
}

void DeviceLock::lock(std::chrono::nanoseconds spin) {
  int rc = pthread_mutex_trylock(&shared_->mutex);
  if (rc == EBUSY) {
    const auto end = std::chrono::steady_clock::now() + spin;
    for (uint32_t i = 1; rc == EBUSY; ++i) {
      cpu_relax();
      if ((i & 15) == 0) {
        if (std::chrono::steady_clock::now() >= end) break;
        rc = pthread_mutex_trylock(&shared_->mutex);
      }
    }
    if (rc == EBUSY) rc = pthread_mutex_lock(&shared_->mutex);
  }
  if (rc == EOWNERDEAD) {
    // The previous holder died mid-command; its driver state died with it.
    pthread_mutex_consistent(&shared_->mutex);
    rc = 0;
  }
  if (rc != 0) throw_errno("pthread_mutex_lock", rc, "tp device lock");
}

void DeviceLock::unlock() {
  pthread_mutex_unlock(&shared_->mutex);
}

}  // namespace kvpager::tp

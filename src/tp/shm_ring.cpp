#include "kvpager/tp/shm_ring.hpp"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <new>

#include "kvpager/common/error.hpp"

namespace kvpager::tp {

namespace {
uint32_t* word_of(std::atomic<uint32_t>& a) {
  return reinterpret_cast<uint32_t*>(&a);
}
}  // namespace

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
  // Shared (not FUTEX_PRIVATE): the peer is another process. EAGAIN/EINTR/ETIMEDOUT all mean
  // "look again", which the caller does.
  syscall(SYS_futex, word_of(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, word_of(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void publish(std::atomic<uint32_t>& counter, std::atomic<uint32_t>& peer_waiting, uint32_t value) {
  counter.store(value, std::memory_order_seq_cst);
  if (peer_waiting.load(std::memory_order_seq_cst) != 0) futex_wake_all(counter);
}

ShmSegment::ShmSegment() {
  fd_.reset(memfd_create("kvpager-tp-ring", MFD_CLOEXEC));
  if (!fd_.valid()) throw_errno("memfd_create", errno, "tp command ring");
  if (ftruncate(fd_.get(), sizeof(ShmRing)) != 0)
    throw_errno("ftruncate", errno, "tp command ring");
  void* p = mmap(nullptr, sizeof(ShmRing), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno("mmap", errno, "tp command ring");
  ring_ = new (p) ShmRing();
}

ShmSegment::ShmSegment(UniqueFd fd) : fd_(std::move(fd)) {
  struct stat st {};
  if (fstat(fd_.get(), &st) != 0) throw_errno("fstat", errno, "tp command ring");
  if (static_cast<size_t>(st.st_size) != sizeof(ShmRing)) {
    throw InvalidArgument("tp channel fd " + std::to_string(fd_.get()) +
                          " is not a command ring (" + std::to_string(st.st_size) +
                          " bytes, expected " + std::to_string(sizeof(ShmRing)) + ")");
  }
  void* p = mmap(nullptr, sizeof(ShmRing), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno("mmap", errno, "tp command ring");
  ring_ = static_cast<ShmRing*>(p);
  if (ring_->magic != ShmRing::kMagic || ring_->size != sizeof(ShmRing)) {
    munmap(p, sizeof(ShmRing));
    ring_ = nullptr;
    throw InvalidArgument("tp channel is not a command ring of this kvpager build");
  }
}

ShmSegment::~ShmSegment() {
  if (ring_ != nullptr) munmap(ring_, sizeof(ShmRing));
}

}  // namespace kvpager::tp

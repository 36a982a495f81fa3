#pragma once
// ShmRing: the shared-memory command ring between the scheduler and one worker, and the
// futex-based waiting both sides use.
//
// Single producer, single consumer each way: the scheduler writes command slot
// (seq % kDepth) and publishes it by storing `posted = seq`; the worker writes reply slot
// (seq % kDepth) and publishes `replied = seq + 1` (the hello makes it 1). A waiter spins for a
// short time, then announces itself in its `*_waiting` word and sleeps on the counter with
// FUTEX_WAIT; a publisher calls FUTEX_WAKE only when the peer announced itself. Both orders
// are sequentially consistent, so no wake-up is lost. Hot path: no allocation, no syscall
// unless the peer sleeps.
//
// ShmSegment owns the memory: a memfd (no name in /dev/shm, nothing to leak) mapped shared;
// the worker maps the same fd, inherited as its channel.
#include <atomic>
#include <chrono>
#include <cstdint>

#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/unique_fd.hpp"

namespace kvpager::tp {

struct ShmRing {
  static constexpr uint32_t kMagic = 0x6b767472;  // "kvtr"
  static constexpr uint32_t kDepth = 4;

  uint32_t magic = kMagic;
  uint32_t size = sizeof(ShmRing);
  alignas(64) std::atomic<uint32_t> posted{0};  // seq of the last command posted (futex word)
  alignas(64) std::atomic<uint32_t> worker_waiting{0};
  alignas(64) std::atomic<uint32_t> replied{0};  // seq of the last reply + 1 (futex word)
  alignas(64) std::atomic<uint32_t> scheduler_waiting{0};
  alignas(64) Command commands[kDepth];
  Reply replies[kDepth];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

class ShmSegment {
 public:
  // Scheduler side: a fresh memfd with a constructed ring.
  ShmSegment();
  // Worker side: maps the ring behind `fd` (taken over); InvalidArgument when it is not one.
  explicit ShmSegment(UniqueFd fd);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  ShmRing& ring() { return *ring_; }
  int fd() const { return fd_.get(); }
  void close_fd() { fd_.reset(); }

 private:
  UniqueFd fd_;
  ShmRing* ring_ = nullptr;
};

// Publishes `value` into `counter` and wakes the peer if it announced it sleeps.
void publish(std::atomic<uint32_t>& counter, std::atomic<uint32_t>& peer_waiting, uint32_t value);

enum class WaitResult { kReady, kTimedOut, kGaveUp };

// Waits until `counter` reaches `target` (wrap-safe). Spins for `spin`, then sleeps on the
// futex in slices of at most `slice`; between slices `give_up()` may end the wait (the peer
// died). Returns kTimedOut at `deadline`.
template <class GiveUp>
[[nodiscard]] WaitResult wait_for(std::atomic<uint32_t>& counter, std::atomic<uint32_t>& my_waiting,
                                  uint32_t target, std::chrono::nanoseconds spin,
                                  std::chrono::steady_clock::time_point deadline,
                                  std::chrono::nanoseconds slice, GiveUp&& give_up);

// One futex wait on `word` while it equals `expected`, at most `timeout`.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::nanoseconds timeout);
void futex_wake_all(std::atomic<uint32_t>& word);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline bool reached(uint32_t value, uint32_t target) {
  return static_cast<int32_t>(value - target) >= 0;
}

template <class GiveUp>
[[nodiscard]] WaitResult wait_for(std::atomic<uint32_t>& counter, std::atomic<uint32_t>& my_waiting,
                                  uint32_t target, std::chrono::nanoseconds spin,
                                  std::chrono::steady_clock::time_point deadline,
                                  std::chrono::nanoseconds slice, GiveUp&& give_up) {
  using clock = std::chrono::steady_clock;
  if (reached(counter.load(std::memory_order_acquire), target)) return WaitResult::kReady;
  const auto spin_end = clock::now() + spin;
  for (uint32_t i = 1;; ++i) {
    if (reached(counter.load(std::memory_order_acquire), target)) return WaitResult::kReady;
    cpu_relax();
    if ((i & 63) == 0 && clock::now() >= spin_end) break;
  }
  for (;;) {
    const uint32_t seen = counter.load(std::memory_order_seq_cst);
    if (reached(seen, target)) return WaitResult::kReady;
    const auto now = clock::now();
    if (now >= deadline) return WaitResult::kTimedOut;
    my_waiting.store(1, std::memory_order_seq_cst);
    const uint32_t again = counter.load(std::memory_order_seq_cst);
    if (!reached(again, target)) {
      futex_wait(counter, again, std::min<std::chrono::nanoseconds>(slice, deadline - now));
    }
    my_waiting.store(0, std::memory_order_relaxed);
    if (reached(counter.load(std::memory_order_acquire), target)) return WaitResult::kReady;
    if (give_up()) return WaitResult::kGaveUp;
  }
}

}  // namespace kvpager::tp

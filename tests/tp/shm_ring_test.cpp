// The shared-memory ring's publish/wait protocol between two threads: no lost wake-ups
// whether the waiter spins or sleeps, deadlines and give-up checks end a wait.
#include <gtest/gtest.h>

#include <thread>

#include "kvpager/tp/shm_ring.hpp"

namespace kvpager::tp {
namespace {

using namespace std::chrono_literals;

void ping_pong(std::chrono::nanoseconds spin, uint32_t rounds) {
  ShmSegment segment;
  ShmRing& ring = segment.ring();
  const auto far = std::chrono::steady_clock::now() + 60s;
  std::thread worker([&] {
    for (uint32_t seq = 1; seq <= rounds; ++seq) {
      ASSERT_EQ(
          wait_for(ring.posted, ring.worker_waiting, seq, spin, far, 1ms, [] { return false; }),
          WaitResult::kReady);
      ring.replies[seq % ShmRing::kDepth].seq = ring.commands[seq % ShmRing::kDepth].seq;
      publish(ring.replied, ring.scheduler_waiting, seq + 1);
    }
  });
  for (uint32_t seq = 1; seq <= rounds; ++seq) {
    ring.commands[seq % ShmRing::kDepth].seq = seq * 7;
    publish(ring.posted, ring.worker_waiting, seq);
    ASSERT_EQ(wait_for(ring.replied, ring.scheduler_waiting, seq + 1, spin, far, 1ms,
                       [] { return false; }),
              WaitResult::kReady);
    EXPECT_EQ(ring.replies[seq % ShmRing::kDepth].seq, seq * 7);
  }
  worker.join();
}

TEST(TpShmRing, PingPongWhileSleeping) {
  ping_pong(0ns, 2000);
}
TEST(TpShmRing, PingPongWhileSpinning) {
  ping_pong(50us, 2000);
}

TEST(TpShmRing, WaitEndsAtTheDeadlineOrWhenGivingUp) {
  ShmSegment segment;
  ShmRing& ring = segment.ring();
  const auto soon = std::chrono::steady_clock::now() + 20ms;
  EXPECT_EQ(wait_for(ring.replied, ring.scheduler_waiting, 1, 0ns, soon, 1ms, [] { return false; }),
            WaitResult::kTimedOut);
  const auto far = std::chrono::steady_clock::now() + 60s;
  EXPECT_EQ(wait_for(ring.replied, ring.scheduler_waiting, 1, 0ns, far, 1ms, [] { return true; }),
            WaitResult::kGaveUp);
}

}  // namespace
}  // namespace kvpager::tp

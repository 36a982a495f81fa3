#include "kvpager/pool/page_pool.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "kvpager/common/error.hpp"
#include "kvpager/vmm/fault_injecting_backend.hpp"
#include "kvpager/vmm/host_backend.hpp"
#include "support/delegating_backend.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using kvpager::testing::wait_until;

namespace {
constexpr size_t kGran = 64 * 1024;
std::shared_ptr<vmm::HostBackend> host(uint64_t capacity = 0) {
  return std::make_shared<vmm::HostBackend>(vmm::HostBackendConfig{kGran, capacity});
}

// A host backend whose create() waits at a gate the test opens and shuts, on every thread but
// the one that built it (the pool's refill thread): a handle the thread is making stays
// charged and not ready for as long as the test wants.
class GatedRefillBackend final : public kvpager::testing::DelegatingBackend {
 public:
  GatedRefillBackend() : DelegatingBackend(host()) {}
  void shut() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    opened_.notify_all();
  }
  vmm::PhysicalHandle create(size_t bytes) override {
    if (std::this_thread::get_id() != owner_) {
      std::unique_lock lock(mutex_);
      opened_.wait(lock, [&] { return open_; });
    }
    return DelegatingBackend::create(bytes);
  }

 private:
  std::thread::id owner_ = std::this_thread::get_id();
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = true;
};
}  // namespace

TEST(PagePool, BackgroundThreadFillsToMinReady) {
  auto budget = std::make_shared<limits::LocalBudget>();
  pool::PagePool p(host(), budget, {kGran, 3, 6, true});
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 3; }));
  EXPECT_EQ(budget->charged_bytes(), 3 * kGran);
  std::vector<vmm::PhysicalHandle> hs(2);
  p.acquire(hs);
  EXPECT_EQ(p.stats().acquired_ready, 2u);
  EXPECT_EQ(p.stats().on_loan, 2u);
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 3; }));  // refilled
  p.give_back(hs);
  EXPECT_EQ(p.stats().on_loan, 0u);
}

TEST(PagePool, SurplusAboveMaxReadyIsReleased) {
  auto budget = std::make_shared<limits::LocalBudget>();
  pool::PagePool p(host(), budget, {kGran, 0, 2, true});
  std::vector<vmm::PhysicalHandle> hs(5);
  p.acquire(hs);  // all created cold
  EXPECT_EQ(p.stats().acquired_cold, 5u);
  p.give_back(hs);
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 2; }));
  EXPECT_EQ(budget->charged_bytes(), 2 * kGran);
}

TEST(PagePool, NeverExceedsTheBudgetAndAcquireIsAllOrNothing) {
  auto budget = std::make_shared<limits::LocalBudget>(4 * kGran);
  pool::PagePool p(host(), budget, {kGran, 8, 8, true});  // wants more than the budget
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 4; }));
  EXPECT_EQ(budget->charged_bytes(), 4 * kGran);
  std::vector<vmm::PhysicalHandle> five(5);
  EXPECT_THROW(p.acquire(five), OutOfMemory);
  EXPECT_EQ(p.stats().ready, 4u);  // nothing taken
  EXPECT_EQ(p.stats().on_loan, 0u);
  EXPECT_LE(budget->charged_bytes(), 4 * kGran);
  std::vector<vmm::PhysicalHandle> four(4);
  p.acquire(four);
  p.give_back(four);
}

TEST(PagePool, AHandleOnItsWayOutNeverMakesAnAcquireFail) {
  // The budget holds 4 handles and the pool keeps none ready: every give_back makes the thread
  // release them, one at a time. A handle it has taken off the ready list is still charged
  // until it is gone, so an acquire of 4 right after a give_back must wait for it rather than
  // be refused.
  auto budget = std::make_shared<limits::LocalBudget>(4 * kGran);
  pool::PagePool p(host(), budget, {kGran, 0, 0, true});
  std::vector<vmm::PhysicalHandle> four(4);
  for (int round = 0; round < 2000; ++round) {
    ASSERT_NO_THROW(p.acquire(four)) << "round " << round;
    p.give_back(four);
    std::this_thread::yield();  // let the thread start releasing
  }
  ASSERT_TRUE(wait_until([&] { return budget->charged_bytes() == 0; }));
}

TEST(PagePool, AHandleTheThreadIsMakingNeverMakesAnAcquireFail) {
  // The budget holds 4 handles and the pool keeps 1 ready. An acquire of 3 takes the ready one
  // and the thread starts making the next: charged, not ready (held at the backend's gate).
  // An acquire of the last handle the budget allows must wait for it and take it rather than
  // be refused (on the GPU this failed vLLM's warm-up, which backs exactly what available()
  // shows).
  auto backend = std::make_shared<GatedRefillBackend>();
  auto budget = std::make_shared<limits::LocalBudget>(4 * kGran);
  pool::PagePool p(backend, budget, {kGran, 1, 1, true});
  std::vector<vmm::PhysicalHandle> three(3), one(1);
  constexpr int kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_TRUE(wait_until([&] {  // 1 ready, the surplus given back released (uncharged)
      return p.stats().ready == 1 && budget->charged_bytes() == kGran;
    })) << "round "
        << round;
    backend->shut();
    p.acquire(three);
    ASSERT_TRUE(wait_until([&] {  // the thread has charged the next one and waits at the gate
      return p.stats().creating_bytes == kGran && budget->charged_bytes() == 4 * kGran;
    }));
    ASSERT_EQ(p.stats().ready, 0u);
    auto last = std::async(std::launch::async, [&] { p.acquire(one); });
    EXPECT_EQ(last.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout)
        << "refused, or took a handle that does not exist yet";
    backend->open();
    ASSERT_NO_THROW(last.get()) << "round " << round;
    EXPECT_EQ(budget->charged_bytes(), 4 * kGran);
    p.give_back(one);
    p.give_back(three);
  }
  const pool::PagePoolStats s = p.stats();
  EXPECT_EQ(s.on_loan, 0u);
  EXPECT_EQ(s.acquired_ready, kRounds * 2u);  // the ready one, and the one made meanwhile
  EXPECT_EQ(s.acquired_cold, kRounds * 2u);
}

TEST(PagePool, DeviceOutOfMemoryRollsBackCreatedHandles) {
  auto budget = std::make_shared<limits::LocalBudget>();
  auto b = host(3 * kGran);
  pool::PagePool p(b, budget, {kGran, 0, 8, false});
  std::vector<vmm::PhysicalHandle> four(4);
  EXPECT_THROW(p.acquire(four), OutOfMemory);
  EXPECT_EQ(budget->charged_bytes(), 0u);
  EXPECT_EQ(b->memory_info().free_bytes, 3 * kGran);
}

TEST(PagePool, TrimReleasesReadyHandlesAndPausesRefill) {
  auto budget = std::make_shared<limits::LocalBudget>();
  pool::PagePool p(host(), budget, {kGran, 2, 4, true});
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 2; }));
  p.trim();
  EXPECT_EQ(p.stats().ready, 0u);
  EXPECT_EQ(budget->charged_bytes(), 0u);
  std::vector<vmm::PhysicalHandle> one(1);
  p.acquire(one);  // resumes refilling
  ASSERT_TRUE(wait_until([&] { return p.stats().ready == 2; }));
  p.give_back(one);
}

TEST(PagePool, RejectsBadConfig) {
  auto budget = std::make_shared<limits::LocalBudget>();
  EXPECT_THROW(pool::PagePool(host(), budget, {kGran + 1, 0, 1, false}), InvalidArgument);
  EXPECT_THROW(pool::PagePool(host(), budget, {kGran, 3, 1, false}), InvalidArgument);
}

TEST(PagePool, BackgroundDriverErrorIsRaisedByTheNextAcquire) {
  auto inner = host();
  auto faulty = std::make_shared<vmm::FaultInjectingBackend>(inner);
  faulty->fail_on(vmm::BackendOp::kCreate, 1);
  pool::PagePool p(faulty, nullptr, {kGran, 1, 2, true});
  // The thread's first create is the one that fails.
  ASSERT_TRUE(wait_until([&] { return faulty->calls(vmm::BackendOp::kCreate) >= 1; }));
  std::vector<vmm::PhysicalHandle> one(1);
  ASSERT_TRUE(wait_until([&] {
    try {
      p.acquire(one);
      p.give_back(one);
      return false;
    } catch (const StateError& e) {
      EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos);
      return true;
    }
  }));
}

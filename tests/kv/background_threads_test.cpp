// The threads kvpager starts (the KV mapper, the page pool's refill) prepare themselves
// (vmm::Backend::prepare_background_thread) before their first backend call. On CUDA that
// call is what keeps an engine's graph capture on another thread (vLLM's warm-up) from
// refusing their unmaps and event waits, and from being invalidated by them.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "kv_test_support.hpp"
#include "support/delegating_backend.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::kv;
using kvpager::testing::wait_until;

namespace {

// Counts the calls made on threads other than the one that built it that never called
// prepare_background_thread.
class ThreadCheckingBackend final : public kvpager::testing::DelegatingBackend {
 public:
  ThreadCheckingBackend() : DelegatingBackend(kvpager::testing::test_host_backend()) {}
  void prepare_background_thread() override {
    std::lock_guard lock(mutex_);
    prepared_.insert(std::this_thread::get_id());
  }
  int unprepared_calls() const { return unprepared_calls_.load(); }
  int background_calls() const { return background_calls_.load(); }
  size_t prepared_threads() const {
    std::lock_guard lock(mutex_);
    return prepared_.size();
  }

 private:
  void before_call() override {
    const auto self = std::this_thread::get_id();
    if (self == owner_) return;
    ++background_calls_;
    std::lock_guard lock(mutex_);
    if (prepared_.count(self) == 0) ++unprepared_calls_;
  }

  const std::thread::id owner_ = std::this_thread::get_id();
  mutable std::mutex mutex_;
  std::set<std::thread::id> prepared_;
  std::atomic<int> unprepared_calls_{0};
  std::atomic<int> background_calls_{0};
};

}  // namespace

TEST(BackgroundThreads, TheMapperAndThePoolPrepareThemselvesBeforeTheirFirstBackendCall) {
  auto backend = std::make_shared<ThreadCheckingBackend>();
  KvCacheConfig config = kvpager::testing::small_cache_config(KvLayout::kInterleaved, 256, true);
  config.max_idle_pages = 1;    // the mapper unmaps every freed page beyond one
  config.idle_release_ms = 20;  // and the pool's ready handles soon after
  KvCache cache(backend, config);
  // The pool's thread makes its ready handles; the mapper maps the reserve.
  ASSERT_TRUE(wait_until([&] { return cache.stats().pool.created >= 2; }));
  for (int round = 0; round < 3; ++round) {
    auto ids = cache.alloc(20);
    cache.free(ids);
  }
  ASSERT_TRUE(wait_until([&] { return cache.stats().pages_unmapped_total > 0; }));
  ASSERT_TRUE(wait_until([&] { return cache.stats().pool.ready == 0; }));  // idle release

  EXPECT_GT(backend->background_calls(), 0);  // the threads did call the backend
  EXPECT_EQ(backend->unprepared_calls(), 0);
  EXPECT_GE(backend->prepared_threads(), 2u);  // the mapper and the pool's thread
}

// Several threads allocate and free at once: no block is lost or owned twice.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "kv_test_support.hpp"
#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::kv;
using namespace kvpager::testing;

class KvCacheConcurrency : public ::testing::TestWithParam<bool> {};

TEST_P(KvCacheConcurrency, NoBlockIsLostOrDoublyOwned) {
  const bool background = GetParam();
  auto config = small_cache_config(KvLayout::kInterleaved, 512, background);
  auto host = test_host_backend();
  KvCache cache(host, config);
  const size_t capacity = cache.stats().usable_blocks;
  std::vector<std::atomic<int>> owner(512);
  for (auto& o : owner) o = -1;
  std::atomic<bool> failed{false};
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 1);
      std::vector<BlockId> mine;
      std::vector<BlockId> buf(16);
      for (int step = 0; step < 3000 && !failed; ++step) {
        if (rng() % 2 == 0 || mine.empty()) {
          const size_t n = rng() % 16 + 1;
          try {
            cache.alloc(n, buf);
          } catch (const OutOfMemory&) {
            continue;  // others hold the rest
          }
          for (size_t i = 0; i < n; ++i) {
            int expected = -1;
            if (!owner[static_cast<size_t>(buf[i].value)].compare_exchange_strong(expected, t)) {
              failed = true;
            }
            mine.push_back(buf[i]);
          }
        } else {
          const size_t n = std::min<size_t>(mine.size(), rng() % 16 + 1);
          std::vector<BlockId> give(mine.end() - static_cast<long>(n), mine.end());
          mine.resize(mine.size() - n);
          for (auto id : give) {
            int expected = t;
            if (!owner[static_cast<size_t>(id.value)].compare_exchange_strong(expected, -1)) {
              failed = true;
            }
          }
          cache.free(give);
        }
      }
      for (auto id : mine) owner[static_cast<size_t>(id.value)] = -1;
      cache.free(mine);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(failed) << "a block was handed to two owners";
  EXPECT_EQ(cache.stats().blocks_in_use, 0u);
  EXPECT_EQ(cache.available(), capacity);
  auto all = cache.alloc(capacity);  // every block is still there
  EXPECT_EQ(all.size(), capacity);
}

INSTANTIATE_TEST_SUITE_P(Mapper, KvCacheConcurrency, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Background" : "Inline"; });

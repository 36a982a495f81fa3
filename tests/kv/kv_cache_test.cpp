#include "kvpager/kv/kv_cache.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "kv_test_support.hpp"
#include "kvpager/common/error.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::kv;
using namespace kvpager::testing;

namespace {

// The observable state that a failed call must leave untouched.
struct Snapshot {
  uint64_t in_use, free_mapped, mapped_pages, mapped_bytes, available;
  bool operator==(const Snapshot&) const = default;
};
Snapshot snapshot(const KvCache& c) {
  const KvCacheStats s = c.stats();
  return {s.blocks_in_use, s.free_mapped_blocks, s.mapped_pages, c.mapped_bytes(), c.available()};
}

}  // namespace

class KvCacheLayouts : public ::testing::TestWithParam<KvLayout> {};

TEST_P(KvCacheLayouts, AllocMapsPagesOnDemandAndNeverHandsOutTheNullBlock) {
  KvCache cache(test_host_backend(), small_cache_config(GetParam(), 64));
  const KvCacheStats s0 = cache.stats();
  EXPECT_EQ(s0.mapped_pages, 1u);  // the null block's page
  EXPECT_EQ(s0.usable_blocks, 63u);
  EXPECT_EQ(cache.available(), 63u);
  auto blocks = cache.alloc(63);
  std::set<int32_t> unique;
  for (auto b : blocks) {
    EXPECT_NE(b, cache.null_block());
    EXPECT_TRUE(cache.is_allocated(b));
    unique.insert(b.value);
  }
  EXPECT_EQ(unique.size(), 63u);
  EXPECT_EQ(cache.available(), 0u);
  EXPECT_EQ(cache.stats().mapped_pages, cache.stats().num_pages);
  EXPECT_THROW(cache.alloc(1), OutOfMemory);
  cache.free(blocks);
  EXPECT_EQ(cache.stats().blocks_in_use, 0u);
  EXPECT_EQ(cache.available(), 63u);
}

TEST_P(KvCacheLayouts, BadInputRaisesAndChangesNothing) {
  KvCache cache(test_host_backend(), small_cache_config(GetParam(), 64));
  auto blocks = cache.alloc(5);
  const Snapshot before = snapshot(cache);
  EXPECT_THROW(cache.alloc(64), InvalidArgument);  // more than the cache can ever hold
  std::vector<BlockId> twice{blocks[0], blocks[0]};
  EXPECT_THROW(cache.free(twice), InvalidArgument);
  std::vector<BlockId> unknown{blocks[1], BlockId{9999}};
  EXPECT_THROW(cache.free(unknown), InvalidArgument);
  std::vector<BlockId> null{cache.null_block()};
  EXPECT_THROW(cache.free(null), InvalidArgument);
  std::vector<BlockId> negative{BlockId{-1}};
  EXPECT_THROW(cache.free(negative), InvalidArgument);
  EXPECT_EQ(snapshot(cache), before);
  for (auto b : blocks) EXPECT_TRUE(cache.is_allocated(b));
  cache.free(blocks);
  EXPECT_THROW(cache.free(std::span<const BlockId>(blocks.data(), 1)), InvalidArgument);
}

TEST_P(KvCacheLayouts, LimitIsEnforcedAndResizeShrinksWithoutTakingBlocksInUse) {
  auto config = small_cache_config(GetParam(), 64);
  KvCache probe(test_host_backend(), config);
  const uint64_t page = probe.stats().page_bytes;
  const uint64_t per_page = probe.stats().max_blocks_per_page;
  config.limit_bytes = 3 * page;
  KvCache cache(test_host_backend(), config);
  const size_t fits = 3 * per_page - 1;  // minus the null block
  EXPECT_EQ(cache.available(), fits);
  auto blocks = cache.alloc(fits);
  const Snapshot full = snapshot(cache);
  try {
    cache.alloc(1);
    FAIL() << "allocation beyond the limit succeeded";
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
  EXPECT_EQ(snapshot(cache), full);
  // Shrink to one page while every page holds blocks: nothing is taken away.
  cache.resize(page);
  EXPECT_EQ(cache.mapped_bytes(), 3 * page);
  // Free the last page's blocks: resize(…) keeps the limit, the page can go.
  std::vector<BlockId> tail(blocks.end() - static_cast<long>(per_page), blocks.end());
  blocks.resize(blocks.size() - per_page);
  cache.free(tail);  // the emptied page is above the lowered limit: free() unmaps it
  EXPECT_EQ(cache.mapped_bytes(), 2 * page);
  cache.resize(page);
  EXPECT_LE(cache.mapped_bytes(), 3 * page);
  EXPECT_EQ(cache.available(), static_cast<size_t>(cache.stats().free_mapped_blocks));
  EXPECT_THROW(cache.alloc(cache.available() + 1), OutOfMemory);
  cache.resize(0);  // no limit
  EXPECT_NO_THROW(cache.alloc(per_page));
}

TEST_P(KvCacheLayouts, BackendFailureMidAllocationRollsBackEveryPage) {
  auto host = test_host_backend();
  auto faulty = std::make_shared<vmm::FaultInjectingBackend>(host);
  auto config = small_cache_config(GetParam(), 64);
  config.pool_max_ready = 0;  // every mapped page creates its handles: create can fail too
  KvCache cache(faulty, config);
  const uint64_t per_page = cache.stats().max_blocks_per_page;
  auto held = cache.alloc(2);
  const Snapshot before = snapshot(cache);
  const int handles = static_cast<int>(cache.space().handles_per_page());
  // A 3-page allocation; fail each map and set-access call in turn.
  for (vmm::BackendOp op :
       {vmm::BackendOp::kMap, vmm::BackendOp::kSetAccess, vmm::BackendOp::kCreate}) {
    for (int nth = 1; nth <= 3 * handles; ++nth) {
      faulty->fail_on(
          op, nth, nth % 2 ? vmm::InjectedError::kOutOfMemory : vmm::InjectedError::kDriverError);
      EXPECT_THROW(cache.alloc(3 * per_page), Error);
      faulty->disarm();
      ASSERT_EQ(snapshot(cache), before) << "op " << static_cast<int>(op) << " call " << nth;
      ASSERT_EQ(host->memory_info().total_bytes - host->memory_info().free_bytes,
                cache.stats().pool.ready_bytes + cache.mapped_bytes());
    }
  }
  for (auto b : held) EXPECT_TRUE(cache.is_allocated(b));
  auto more = cache.alloc(3 * per_page);  // and it works afterwards
  EXPECT_EQ(more.size(), 3 * per_page);
}

TEST_P(KvCacheLayouts, TrimUnmapsEveryFreePageAndBlocksInUseKeepTheirData) {
  KvCache cache(test_host_backend(), small_cache_config(GetParam(), 256));
  const size_t per_page = cache.stats().max_blocks_per_page;
  auto a = cache.alloc(3 * per_page - 1);  // pages 0-2 (page 0 holds the null block)
  auto b = cache.alloc(2 * per_page);      // pages 3-4
  // Write a marker into every block of `b` through layer 3's V tensor.
  const TensorView v = cache.tensor(3, 1);
  for (auto id : b) {
    *reinterpret_cast<uint64_t*>(v.base + id.value * v.block_stride_bytes) = 0xabc00000u + id.value;
  }
  cache.free(a);
  const uint64_t trimmed = cache.trim();
  EXPECT_EQ(trimmed, 2 * cache.stats().page_bytes);  // pages 1 and 2
  EXPECT_EQ(cache.stats().free_pages, 0u);
  EXPECT_EQ(cache.stats().pool.ready, 0u);
  for (auto id : b) {
    EXPECT_EQ(*reinterpret_cast<uint64_t*>(v.base + id.value * v.block_stride_bytes),
              0xabc00000u + id.value);
  }
  cache.free(b);
  cache.trim();
  EXPECT_EQ(cache.mapped_bytes(), cache.stats().page_bytes);  // the null block's page only
  EXPECT_EQ(cache.stats().peak_mapped_bytes, 5 * cache.stats().page_bytes);  // pages 0-4 at once
}

TEST_P(KvCacheLayouts, BackgroundThreadKeepsTheReserveAndUnmapsIdlePages) {
  auto config = small_cache_config(GetParam(), 256, true);
  KvCache cache(test_host_backend(), config);
  ASSERT_TRUE(wait_until([&] { return cache.stats().free_pages >= 1; }));
  const uint64_t per_page = cache.stats().max_blocks_per_page;
  auto blocks = cache.alloc(per_page);  // consumes the reserve page...
  ASSERT_TRUE(wait_until([&] { return cache.stats().free_pages >= 1; }));  // ...refilled
  auto big = cache.alloc(8 * per_page);
  cache.free(big);
  // 8+ free pages > max_idle_pages (2): the thread unmaps down to 2. (A page leaves the free
  // count when the thread claims it, before its unmap finishes and is counted: wait for both.)
  ASSERT_TRUE(wait_until([&] {
    const KvCacheStats s = cache.stats();
    return s.free_pages <= 2 && s.pages_unmapped_total >= 6;
  })) << cache.stats().free_pages
      << " free pages, " << cache.stats().pages_unmapped_total << " unmapped";
  cache.free(blocks);
}

TEST_P(KvCacheLayouts, AnIdleCacheReleasesItsReadyHandlesAndAnAllocRefillsThePool) {
  auto config = small_cache_config(GetParam(), 256, true);
  config.pool_min_ready = 2;
  config.pool_max_ready = 4;
  config.idle_release_ms = 100;
  auto budget = std::make_shared<limits::LocalBudget>();  // counts ready handles too
  KvCache cache(test_host_backend(), config, budget);
  const uint64_t per_page = cache.stats().max_blocks_per_page;
  auto blocks = cache.alloc(2 * per_page);
  ASSERT_TRUE(wait_until([&] { return cache.stats().pool.ready >= 1; }));  // created ahead
  cache.free(blocks);
  // No alloc for 100 ms: the ready handles go, and the cache holds only its mapped pages.
  ASSERT_TRUE(wait_until([&] {
    return cache.stats().pool.ready == 0 && budget->charged_bytes() == cache.mapped_bytes();
  })) << cache.stats().pool.ready
      << " ready handles, " << budget->charged_bytes() << " B charged";
  // The next alloc that maps refills the pool.
  blocks = cache.alloc(4 * per_page);
  EXPECT_TRUE(wait_until([&] { return cache.stats().pool.ready >= 1; }));
  cache.free(blocks);
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvCacheLayouts,
                         ::testing::Values(KvLayout::kPerLayer, KvLayout::kInterleaved),
                         [](const auto& info) {
                           return info.param == KvLayout::kPerLayer ? "PerLayer" : "Interleaved";
                         });

TEST(KvCache, BudgetSharedByTwoCachesIsNeverExceeded) {
  auto host = test_host_backend();
  auto config = small_cache_config(KvLayout::kInterleaved, 64);
  auto budget = std::make_shared<limits::LocalBudget>(6 * kTestGranularity);
  KvCache a(host, config, budget);
  KvCache b(host, config, budget);
  // 6 pages of 2 blocks: a's and b's null pages, 4 free for either
  EXPECT_EQ(b.available(), 1 + 2 * 4u);  // the null page's spare block + 4 pages
  auto from_a = a.alloc(2 * 4 - 1);      // a maps 4 pages in all
  EXPECT_EQ(b.available(), 1 + 2u);      // what a holds is not b's: 1 page left in the budget
  EXPECT_EQ(a.available(), 2u);
  EXPECT_EQ(b.stats().available_blocks, 1 + 2u);
  EXPECT_EQ(b.stats().available_within_limit_blocks, 1 + 2 * 5u);  // a holds the rest
  EXPECT_THROW(b.alloc(2 * 2), OutOfMemory);  // b has its null page; 1 page left in budget
  EXPECT_LE(budget->charged_bytes(), budget->limit_bytes());
  a.free(from_a);
  a.trim();
  EXPECT_NO_THROW(b.alloc(4));
}

TEST(KvCache, RejectsInconsistentConfig) {
  auto config = small_cache_config(KvLayout::kInterleaved, 64);
  config.reserve_pages = 5;
  config.max_idle_pages = 2;
  EXPECT_THROW(KvCache(test_host_backend(), config), InvalidArgument);
  config = small_cache_config(KvLayout::kInterleaved, 64);
  config.handle_bytes = kTestGranularity + 4096;
  EXPECT_THROW(KvCache(test_host_backend(), config), InvalidArgument);
  config = small_cache_config(KvLayout::kInterleaved, 1);
  EXPECT_THROW(KvCache(test_host_backend(), config), InvalidArgument);
}

TEST(KvCache, DefaultHandleSizeHoldsTheConfiguredInterleavedBlocks) {
  auto config = small_cache_config(KvLayout::kInterleaved, 64);
  config.handle_bytes = 0;
  config.geometry.num_layers = 32;  // 256 KiB cell > 64 KiB granularity
  config.interleaved_blocks_per_page = 1;
  EXPECT_EQ(KvCache(test_host_backend(), config).config().handle_bytes, 256 * 1024u);
  config.interleaved_blocks_per_page = 3;
  EXPECT_EQ(KvCache(test_host_backend(), config).config().handle_bytes, 768 * 1024u);
  EXPECT_EQ(KvCache(test_host_backend(), config).stats().max_blocks_per_page, 3u);
  config.layout = KvLayout::kPerLayer;  // per-layer: the granularity
  EXPECT_EQ(KvCache(test_host_backend(), config).config().handle_bytes, kTestGranularity);
}

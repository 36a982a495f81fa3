#include "kvpager/kv/block_allocator.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::kv;

namespace {
// 4 pages of 8 blocks.
BlockAllocator four_pages() {
  return BlockAllocator({{0, 8}, {8, 8}, {16, 8}, {24, 8}}, 32);
}
void map_all(BlockAllocator& a) {
  while (auto p = a.claim_unmapped_page()) a.finish_mapping(*p, true);
}
}  // namespace

TEST(BlockAllocator, OnlyMappedPagesHandOutBlocks) {
  auto a = four_pages();
  std::vector<BlockId> out(1);
  EXPECT_FALSE(a.try_alloc(1, out));
  auto p = a.claim_unmapped_page();
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, 0u);                  // lowest first
  EXPECT_FALSE(a.try_alloc(1, out));  // still mapping
  a.finish_mapping(*p, true);
  ASSERT_TRUE(a.try_alloc(1, out));
  EXPECT_EQ(out[0].value, 0);
  std::vector<BlockId> many(8);
  EXPECT_FALSE(a.try_alloc(8, many));  // 7 free: all or nothing
  EXPECT_EQ(a.free_mapped_blocks(), 7u);
}

TEST(BlockAllocator, BestFitFillsTheFullestPartialPageFirst) {
  auto a = four_pages();
  map_all(a);
  std::vector<BlockId> all(32);
  ASSERT_TRUE(a.try_alloc(32, all));
  // Leave page 1 with 2 free blocks and page 2 with 5 free blocks.
  std::vector<BlockId> f1{BlockId{8}, BlockId{9}};
  std::vector<BlockId> f2{BlockId{16}, BlockId{17}, BlockId{18}, BlockId{19}, BlockId{20}};
  a.free(f2);
  a.free(f1);
  std::vector<BlockId> out(3);
  ASSERT_TRUE(a.try_alloc(3, out));
  // Two from page 1 (fullest), then one from page 2.
  std::set<int> pages;
  EXPECT_EQ(out[0].value / 8, 1);
  EXPECT_EQ(out[1].value / 8, 1);
  EXPECT_EQ(out[2].value / 8, 2);
}

TEST(BlockAllocator, PartialPagesBeatFreePagesSoPagesEmptyOut) {
  auto a = four_pages();
  map_all(a);
  std::vector<BlockId> one(1);
  ASSERT_TRUE(a.try_alloc(1, one));
  const int first_page = one[0].value / 8;
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(a.try_alloc(1, one));
    EXPECT_EQ(one[0].value / 8, first_page);
  }
  EXPECT_EQ(a.free_pages(), 3u);
}

TEST(BlockAllocator, FreeValidatesEverythingBeforeChangingAnything) {
  auto a = four_pages();
  map_all(a);
  std::vector<BlockId> out(4);
  ASSERT_TRUE(a.try_alloc(4, out));
  const size_t free_before = a.free_mapped_blocks();
  std::vector<BlockId> twice{out[0], out[1], out[0]};
  EXPECT_THROW(a.free(twice), InvalidArgument);
  std::vector<BlockId> unknown{out[0], BlockId{1000}};
  EXPECT_THROW(a.free(unknown), InvalidArgument);
  std::vector<BlockId> not_used{out[0], BlockId{31}};
  EXPECT_THROW(a.free(not_used), InvalidArgument);
  EXPECT_EQ(a.free_mapped_blocks(), free_before);
  for (auto id : out) EXPECT_TRUE(a.in_use(id));
  a.free(out);
  EXPECT_THROW(a.free(std::span<const BlockId>(out.data(), 1)), InvalidArgument);  // double free
}

TEST(BlockAllocator, PagesWithBlocksInUseAreNeverClaimedForUnmap) {
  auto a = four_pages();
  map_all(a);
  std::vector<BlockId> out(9);
  ASSERT_TRUE(a.try_alloc(9, out));  // one page full, one partial
  std::set<uint32_t> holding;
  for (auto id : out) holding.insert(static_cast<uint32_t>(id.value / 8));
  ASSERT_EQ(holding.size(), 2u);
  std::set<uint32_t> claimed;
  while (auto p = a.claim_free_page()) {
    EXPECT_FALSE(holding.count(*p)) << "page " << *p << " holds blocks in use";
    claimed.insert(*p);
  }
  EXPECT_EQ(claimed.size(), 2u);
  for (auto p : claimed) a.finish_unmapping(p, true);
  EXPECT_EQ(a.unmapped_pages(), 2u);
  EXPECT_EQ(a.free_mapped_blocks(), 7u);
}

TEST(BlockAllocator, StraddlingBlocksAreNeverHandedOut) {
  // Page size 10 units, block 4 units: page 0 holds blocks 0,1; block 2 straddles; page 1
  // holds blocks 3,4.
  BlockAllocator a({{0, 2}, {3, 2}}, 5);
  map_all(a);
  EXPECT_EQ(a.usable_blocks(), 4u);
  std::vector<BlockId> out(4);
  ASSERT_TRUE(a.try_alloc(4, out));
  for (auto id : out) EXPECT_NE(id.value, 2);
  std::vector<BlockId> straddler{BlockId{2}};
  EXPECT_THROW(a.free(straddler), InvalidArgument);
}

TEST(BlockAllocator, RandomOperationsKeepCountsConsistent) {
  BlockAllocator a({{0, 5}, {5, 5}, {10, 5}, {15, 5}, {20, 5}, {25, 3}}, 28);
  std::mt19937 rng(42);
  std::vector<BlockId> owned;
  std::vector<BlockId> buf(28);
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 4);
    if (op == 0) {
      if (auto p = a.claim_unmapped_page()) a.finish_mapping(*p, rng() % 5 != 0);
    } else if (op == 1) {
      if (auto p = a.claim_free_page()) a.finish_unmapping(*p, rng() % 5 != 0);
    } else if (op == 2) {
      const size_t n = rng() % 6 + 1;
      if (a.try_alloc(n, buf))
        owned.insert(owned.end(), buf.begin(), buf.begin() + static_cast<long>(n));
    } else if (!owned.empty()) {
      const size_t n = std::min<size_t>(owned.size(), rng() % 4 + 1);
      std::shuffle(owned.begin(), owned.end(), rng);
      a.free(std::span<const BlockId>(owned.data() + owned.size() - n, n));
      owned.resize(owned.size() - n);
    }
    // Invariants: every owned block is in use, counts add up, no block is owned twice.
    ASSERT_EQ(a.used_blocks(), owned.size());
    size_t mapped_capacity = 0, free_pages = 0;
    for (uint32_t p = 0; p < a.num_pages(); ++p) {
      if (a.page_state(p) == AllocPageState::kMapped) {
        mapped_capacity += static_cast<size_t>(a.page_blocks(p).count);
        free_pages += a.used_in_page(p) == 0;
      } else {
        ASSERT_EQ(a.used_in_page(p), 0u) << "blocks in use in an unmapped page";
      }
    }
    ASSERT_EQ(mapped_capacity, a.free_mapped_blocks() + a.used_blocks());
    ASSERT_EQ(free_pages, a.free_pages());
  }
  std::set<int> unique;
  for (auto id : owned) ASSERT_TRUE(unique.insert(id.value).second);
}

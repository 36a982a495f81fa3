#include "kvpager/kv/kv_space.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "kv_test_support.hpp"
#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::kv;
using namespace kvpager::testing;

namespace {

struct SpaceFixture {
  std::shared_ptr<vmm::HostBackend> host = test_host_backend();
  std::shared_ptr<vmm::FaultInjectingBackend> backend =
      std::make_shared<vmm::FaultInjectingBackend>(host);
  std::shared_ptr<limits::LocalBudget> budget = std::make_shared<limits::LocalBudget>();
  pool::PagePool pool{backend, budget, {kTestGranularity, 0, 64, false}};
  KvSpace space;
  SpaceFixture(KvLayout layout, uint64_t blocks, bool zero)
      : space(backend, pool, KvSpaceConfig{small_geometry(), layout, blocks, zero}) {}
};

uint64_t* element(const TensorView& v, uint64_t block, uint32_t token) {
  return reinterpret_cast<uint64_t*>(v.base + block * v.block_stride_bytes +
                                     uint64_t{token} * v.kv_heads * v.head_dim * v.dtype_bytes);
}

}  // namespace

class KvSpaceLayouts : public ::testing::TestWithParam<KvLayout> {};

TEST_P(KvSpaceLayouts, TensorsOfEveryLayerAndComponentAreDisjoint) {
  SpaceFixture f(GetParam(), 12, false);
  for (uint32_t p = 0; p < f.space.num_pages(); ++p) f.space.map_page(PageId{p});
  const KvGeometry g = small_geometry();
  // Write a distinct value at the first and last word of every block of every tensor.
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    for (uint32_t c = 0; c < 2; ++c) {
      const TensorView v = f.space.tensor(l, c);
      for (uint64_t b = 0; b < 12; ++b) {
        *element(v, b, 0) = (l * 2 + c) * 1000 + b;
        auto* last =
            reinterpret_cast<uint64_t*>(v.base + b * v.block_stride_bytes + g.block_bytes() - 8);
        *last = (l * 2 + c) * 1000 + b + 500;
      }
    }
  }
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    for (uint32_t c = 0; c < 2; ++c) {
      const TensorView v = f.space.tensor(l, c);
      for (uint64_t b = 0; b < 12; ++b) {
        ASSERT_EQ(*element(v, b, 0), (l * 2 + c) * 1000 + b);
        auto* last =
            reinterpret_cast<uint64_t*>(v.base + b * v.block_stride_bytes + g.block_bytes() - 8);
        ASSERT_EQ(*last, (l * 2 + c) * 1000 + b + 500);
      }
    }
  }
  EXPECT_THROW(f.space.tensor(4, 0), InvalidArgument);
  EXPECT_THROW(f.space.tensor(0, 2), InvalidArgument);
}

TEST_P(KvSpaceLayouts, PagesCoverEveryBlockOnceAndMapCostMatchesTheLayout) {
  SpaceFixture f(GetParam(), 40, false);
  std::set<int32_t> seen;
  for (uint32_t p = 0; p < f.space.num_pages(); ++p) {
    const BlockRange r = f.space.blocks_of_page(PageId{p});
    for (int32_t b = r.first; b < r.first + r.count; ++b) ASSERT_TRUE(seen.insert(b).second);
  }
  EXPECT_EQ(seen.size(), 40u);
  const int before = f.backend->calls(vmm::BackendOp::kMap);
  f.space.map_page(PageId{0});
  const int maps = f.backend->calls(vmm::BackendOp::kMap) - before;
  EXPECT_EQ(maps, GetParam() == KvLayout::kInterleaved ? 1 : 8);  // 4 layers x K/V
  EXPECT_EQ(f.space.page_bytes(), maps * kTestGranularity);
}

TEST_P(KvSpaceLayouts, MapOfAMappedPageAndOutOfRangePagesAreRejected) {
  SpaceFixture f(GetParam(), 12, false);
  f.space.map_page(PageId{0});
  EXPECT_THROW(f.space.map_page(PageId{0}), InvalidArgument);
  EXPECT_THROW(f.space.unmap_page(PageId{1}), InvalidArgument);
  EXPECT_THROW(f.space.map_page(PageId{f.space.num_pages()}), InvalidArgument);
  f.space.unmap_page(PageId{0});
  EXPECT_EQ(f.space.mapped_pages(), 0u);
  EXPECT_EQ(f.pool.stats().on_loan, 0u);
}

// Inject a failure at every backend step of map_page and unmap_page, with and without the zero
// page, and check the page is exactly as before and can then be mapped/unmapped normally.
TEST_P(KvSpaceLayouts, FailureAtEveryStepRollsBack) {
  for (bool zero : {false, true}) {
    SpaceFixture f(GetParam(), 40, zero);
    const PageId page{1};
    const int steps_per_handle = zero ? 3 : 2;  // (unmap zero,) map, set_access
    const int handles = static_cast<int>(f.space.handles_per_page());
    for (vmm::BackendOp op : {vmm::BackendOp::kMap, vmm::BackendOp::kSetAccess,
                              vmm::BackendOp::kUnmap, vmm::BackendOp::kCreate}) {
      for (int nth = 1; nth <= handles * steps_per_handle; ++nth) {
        f.backend->fail_on(op, nth);
        bool threw = false;
        try {
          f.space.map_page(page);
        } catch (const DriverError&) {
          threw = true;
        }
        f.backend->disarm();
        if (threw) {
          ASSERT_EQ(f.space.state(page), PageState::kReserved) << "op " << int(op) << " n " << nth;
          ASSERT_EQ(f.pool.stats().on_loan, 0u);
          ASSERT_EQ(f.space.mapped_pages(), 0u);
        } else {
          f.space.unmap_page(page);
        }
        // The page maps and unmaps cleanly afterwards: no stray mapping was left behind.
        ASSERT_NO_THROW(f.space.map_page(page));
        // Now fail the unmap at this step.
        f.backend->fail_on(op, nth);
        threw = false;
        try {
          f.space.unmap_page(page);
        } catch (const DriverError&) {
          threw = true;
        }
        f.backend->disarm();
        if (threw) {
          ASSERT_EQ(f.space.state(page), PageState::kMapped);
          const TensorView v = f.space.tensor(0, 0);
          const uint64_t first = f.space.blocks_of_page(page).first;
          *reinterpret_cast<volatile uint64_t*>(v.base + first * v.block_stride_bytes) = 7;
          ASSERT_NO_THROW(f.space.unmap_page(page));
        }
        ASSERT_EQ(f.space.state(page), PageState::kReserved);
      }
    }
  }
}

// A run of consecutive pages maps with one set-access per tensor, and the memory is usable.
TEST_P(KvSpaceLayouts, MapRunTakesOneSetAccessPerTensor) {
  for (bool zero : {false, true}) {
    SpaceFixture f(GetParam(), 40, zero);
    const uint32_t n = std::min<uint32_t>(4, f.space.num_pages() - 1);
    const int maps0 = f.backend->calls(vmm::BackendOp::kMap);
    const int access0 = f.backend->calls(vmm::BackendOp::kSetAccess);
    f.space.map_run(PageId{1}, n);
    const int handles = static_cast<int>(f.space.handles_per_page());
    const int maps = f.backend->calls(vmm::BackendOp::kMap) - maps0;
    const int access = f.backend->calls(vmm::BackendOp::kSetAccess) - access0;
    EXPECT_EQ(maps, static_cast<int>(n) * handles);
    // With the zero page the run falls back to map_page per page (one set-access per handle).
    EXPECT_EQ(access, zero ? static_cast<int>(n) * handles : handles);
    EXPECT_EQ(f.space.mapped_pages(), n);
    for (uint32_t p = 1; p <= n; ++p) {
      EXPECT_EQ(f.space.state(PageId{p}), PageState::kMapped);
      const uint64_t block = f.space.blocks_of_page(PageId{p}).first;
      const KvGeometry g = small_geometry();
      for (uint32_t l = 0; l < g.num_layers; ++l) {
        for (uint32_t c = 0; c < 2; ++c) *element(f.space.tensor(l, c), block, 1) = p * 100 + l;
      }
    }
    for (uint32_t p = 1; p <= n; ++p) f.space.unmap_page(PageId{p});
    EXPECT_EQ(f.pool.stats().on_loan, 0u);
    // A run over a mapped page is refused before anything changes.
    f.space.map_page(PageId{2});
    EXPECT_THROW(f.space.map_run(PageId{1}, n), InvalidArgument);
    EXPECT_EQ(f.space.mapped_pages(), 1u);
    EXPECT_EQ(f.space.state(PageId{1}), PageState::kReserved);
    EXPECT_THROW(f.space.map_run(PageId{f.space.num_pages() - 1}, 2), InvalidArgument);
    f.space.unmap_page(PageId{2});
    // a count whose last page wraps around 2^32 back to page 0 is refused too
    EXPECT_THROW(f.space.map_run(PageId{2}, UINT32_MAX), InvalidArgument);
    EXPECT_THROW(f.space.map_run(PageId{f.space.num_pages()}, 1), InvalidArgument);
    EXPECT_EQ(f.space.state(PageId{2}), PageState::kReserved);
    EXPECT_EQ(f.space.mapped_pages(), 0u);
  }
}

TEST_P(KvSpaceLayouts, MapRunFailureAtEveryStepRollsBack) {
  SpaceFixture f(GetParam(), 40, false);
  const uint32_t n = 3;
  const int handles = static_cast<int>(f.space.handles_per_page());
  for (vmm::BackendOp op : {vmm::BackendOp::kMap, vmm::BackendOp::kSetAccess,
                            vmm::BackendOp::kUnmap, vmm::BackendOp::kCreate}) {
    for (int nth = 1; nth <= static_cast<int>(n) * handles; ++nth) {
      f.backend->fail_on(op, nth);
      bool threw = false;
      try {
        f.space.map_run(PageId{0}, n);
      } catch (const DriverError&) {
        threw = true;
      }
      f.backend->disarm();
      if (threw) {
        for (uint32_t p = 0; p < n; ++p) {
          ASSERT_EQ(f.space.state(PageId{p}), PageState::kReserved) << int(op) << " " << nth;
        }
        ASSERT_EQ(f.pool.stats().on_loan, 0u);
        ASSERT_EQ(f.space.mapped_pages(), 0u);
      } else {
        for (uint32_t p = 0; p < n; ++p) f.space.unmap_page(PageId{p});
      }
      ASSERT_NO_THROW(f.space.map_run(PageId{0}, n));  // nothing stray was left behind
      for (uint32_t p = 0; p < n; ++p) f.space.unmap_page(PageId{p});
    }
  }
}

TEST_P(KvSpaceLayouts, ZeroPageBacksUnmappedPagesForReads) {
  SpaceFixture f(GetParam(), 40, true);
  const TensorView v = f.space.tensor(1, 1);
  const uint64_t block = f.space.blocks_of_page(PageId{1}).first;
  EXPECT_EQ(*element(v, block, 3), 0u);  // unmapped, reads zero
  f.space.map_page(PageId{1});
  *element(v, block, 3) = 99;
  f.space.unmap_page(PageId{1});
  EXPECT_EQ(*element(v, block, 3), 0u);  // the zero page is back, the write went to the handle
  EXPECT_TRUE(f.space.zero_page_read_only());
  EXPECT_DEATH(*element(v, block, 3) = 1, "");  // read-only: a stray write faults
}

TEST_P(KvSpaceLayouts, WithoutZeroPageUnmappedMemoryFaults) {
  SpaceFixture f(GetParam(), 12, false);
  const TensorView v = f.space.tensor(0, 0);
  EXPECT_DEATH((void)*reinterpret_cast<volatile uint64_t*>(v.base), "");
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvSpaceLayouts,
                         ::testing::Values(KvLayout::kPerLayer, KvLayout::kInterleaved),
                         [](const auto& info) {
                           return info.param == KvLayout::kPerLayer ? "PerLayer" : "Interleaved";
                         });

TEST(KvSpace, InterleavedRejectsAHandleSmallerThanOneCell) {
  auto host = test_host_backend();
  pool::PagePool pool(host, nullptr, {kTestGranularity, 0, 4, false});
  KvGeometry g = small_geometry();
  g.num_layers = 32;  // 32 layers x 2 x 4 KiB = 256 KiB > 64 KiB handle
  try {
    KvSpace s(host, pool, KvSpaceConfig{g, KvLayout::kInterleaved, 8, false});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("256.00 KiB"), std::string::npos) << e.what();
  }
}

TEST(KvSpace, LatentGeometryHasOneComponent) {
  auto host = test_host_backend();
  pool::PagePool pool(host, nullptr, {kTestGranularity, 0, 4, false});
  KvGeometry g;
  g.num_layers = 3;
  g.kv_heads = 1;
  g.head_dim = 576;  // MLA latent 512 + rope 64
  g.dtype_bytes = 1;
  g.block_size = 16;
  g.kind = KvKind::kLatent;
  KvSpace s(host, pool, KvSpaceConfig{g, KvLayout::kInterleaved, 20, false});
  EXPECT_EQ(s.num_tensors(), 3u);
  EXPECT_THROW(s.tensor(0, 1), InvalidArgument);
  // 9216-byte blocks x 3 layers = 27648 B cells: 2 per 64 KiB page, and one straddles.
  uint64_t total = 0;
  for (uint32_t p = 0; p < s.num_pages(); ++p) total += s.blocks_of_page(PageId{p}).count;
  EXPECT_LT(total, 20u);
  EXPECT_GE(total, 20u - s.num_pages());
}

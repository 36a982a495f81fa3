// GPU tests (label gpu) of KvSpace/KvCache on the CUDA backend: kernels write and read blocks
// through the tensor views; skipped with a message where no CUDA device is present.
#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/vmm/cuda_backend.hpp"
#include "kvpager/vmm/cuda_driver.hpp"
#include "support/gpu_capture.hpp"
#include "support/gpu_pattern.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::kv;
using kvpager::testing::gpu_count_mismatches;
using kvpager::testing::gpu_count_nonzero;
using kvpager::testing::gpu_fill_pattern;

namespace {
KvCacheConfig llama_like(KvLayout layout) {
  KvCacheConfig c;
  c.geometry.num_layers = 32;
  c.geometry.kv_heads = 8;
  c.geometry.head_dim = 128;
  c.geometry.dtype_bytes = 2;
  c.geometry.block_size = 16;  // 32 KiB per layer per K/V; 2 MiB interleaved cell
  c.layout = layout;
  c.num_blocks = 512;
  c.reserve_pages = 0;
  c.max_idle_pages = 1000;
  c.background = false;
  c.pool_min_ready = 0;
  return c;
}
}  // namespace

class KvCacheGpu : public ::testing::TestWithParam<KvLayout> {
 protected:
  void SetUp() override {
    if (!vmm::CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device present";
  }
};

TEST_P(KvCacheGpu, KernelWritesSurviveUnmapOfOtherPagesAndTrim) {
  auto backend = std::make_shared<vmm::CudaBackend>(0);
  KvCache cache(backend, llama_like(GetParam()));
  const auto& g = cache.config().geometry;
  auto keep = cache.alloc(40);
  auto drop = cache.alloc(40);
  const char* err = nullptr;
  for (auto id : keep) {
    for (uint32_t l = 0; l < g.num_layers; l += 7) {
      const TensorView v = cache.tensor(l, 1);
      ASSERT_TRUE(gpu_fill_pattern(v.base + id.value * v.block_stride_bytes, g.block_bytes(),
                                   static_cast<uint32_t>(id.value * 100 + l), &err))
          << err;
    }
  }
  for (auto id : drop) {
    const TensorView v = cache.tensor(0, 0);
    ASSERT_TRUE(
        gpu_fill_pattern(v.base + id.value * v.block_stride_bytes, g.block_bytes(), 1, &err))
        << err;
  }
  cache.free(drop);
  EXPECT_GT(cache.trim(), 0u);
  for (auto id : keep) {
    for (uint32_t l = 0; l < g.num_layers; l += 7) {
      const TensorView v = cache.tensor(l, 1);
      EXPECT_EQ(gpu_count_mismatches(v.base + id.value * v.block_stride_bytes, g.block_bytes(),
                                     static_cast<uint32_t>(id.value * 100 + l)),
                0);
    }
  }
  // Re-allocate: pages are mapped again and kernels can write them.
  auto again = cache.alloc(40);
  for (auto id : again) {
    const TensorView v = cache.tensor(31, 0);
    ASSERT_TRUE(
        gpu_fill_pattern(v.base + id.value * v.block_stride_bytes, g.block_bytes(), 5, &err))
        << err;
    EXPECT_EQ(gpu_count_mismatches(v.base + id.value * v.block_stride_bytes, g.block_bytes(), 5),
              0);
  }
  cache.free(keep);
  cache.free(again);
}

TEST_P(KvCacheGpu, ZeroPageMakesUnmappedBlocksReadAsZero) {
  auto backend = std::make_shared<vmm::CudaBackend>(0);
  auto config = llama_like(GetParam());
  config.zero_fill_unmapped = true;
  config.num_blocks = 256;  // per-layer: 4 pages of 64 blocks
  KvCache cache(backend, config);
  const auto& g = cache.config().geometry;
  auto ids = cache.alloc(30);
  const char* err = nullptr;
  const TensorView v = cache.tensor(5, 0);
  for (auto id : ids) {
    ASSERT_TRUE(
        gpu_fill_pattern(v.base + id.value * v.block_stride_bytes, g.block_bytes(), 9, &err))
        << err;
  }
  cache.free(ids);
  cache.trim();
  // Every block except the null block's page is unmapped; a kernel reads zeros, no fault.
  const uint64_t first_unmapped = cache.space().blocks_of_page(PageId{1}).first;
  EXPECT_EQ(gpu_count_nonzero(v.base + first_unmapped * v.block_stride_bytes,
                              (config.num_blocks - first_unmapped - 1) * v.block_stride_bytes),
            0);
}

TEST_P(KvCacheGpu, OutOfMemoryUnderALimitLeavesTheCacheUnchanged) {
  auto backend = std::make_shared<vmm::CudaBackend>(0);
  auto config = llama_like(GetParam());
  KvCache probe(backend, config);
  config.limit_bytes = 4 * probe.stats().page_bytes;
  KvCache cache(backend, config);
  const size_t avail = cache.available();
  auto ids = cache.alloc(avail);
  const uint64_t mapped = cache.mapped_bytes();
  EXPECT_THROW(cache.alloc(1), OutOfMemory);
  EXPECT_EQ(cache.mapped_bytes(), mapped);
  cache.free(ids);
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvCacheGpu,
                         ::testing::Values(KvLayout::kPerLayer, KvLayout::kInterleaved),
                         [](const auto& info) {
                           return info.param == KvLayout::kPerLayer ? "PerLayer" : "Interleaved";
                         });

// vLLM's warm-up captures CUDA graphs (global mode) while another engine's ask for room has
// this cache's mapper unmap: the mapper must neither fail nor invalidate the capture.
TEST(KvCacheGpuCapture, TheMapperUnmapsWhileAnotherThreadCapturesAGraph) {
  if (!vmm::CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device present";
  auto backend = std::make_shared<vmm::CudaBackend>(0);
  kvpager::testing::GpuStream engine_stream;
  KvCacheConfig c = llama_like(KvLayout::kInterleaved);
  c.background = true;
  c.max_idle_pages = 0;  // every freed page is unmapped by the mapper
  c.pool_min_ready = 2;  // and the pool's thread creates and releases handles meanwhile
  c.pool_max_ready = 2;
  c.stream = engine_stream.handle();
  c.wait_for_stream_before_unmap = true;
  KvCache cache(backend, c);
  const uint32_t mapped_before = cache.stats().mapped_pages;
  auto ids = cache.alloc(64);
  ASSERT_GT(cache.stats().mapped_pages, mapped_before);
  {
    kvpager::testing::GlobalCapture capture;
    cache.free(ids);
    EXPECT_TRUE(kvpager::testing::wait_until([&] {
      return cache.stats().mapped_pages <= mapped_before;
    })) << "the mapper did not unmap during the capture";
    EXPECT_EQ(capture.end(), "");
  }
  EXPECT_NO_THROW(cache.free(cache.alloc(8)));  // the mapper is not broken
}

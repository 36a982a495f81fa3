// The registry on the CUDA backend (label gpu; skipped without a device): a limit lowered
// through the registry gives device memory back to the driver within a bounded wait, the
// blocks in use keep their contents (checked by kernels), and allocation past it is refused.
#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry.hpp"
#include "kvpager/vmm/cuda_backend.hpp"
#include "kvpager/vmm/cuda_driver.hpp"
#include "limits/registry_test_support.hpp"
#include "support/gpu_pattern.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::testing;

TEST(LimitsGpu, LoweredLimitReturnsDeviceMemoryAndKeepsBlocksInUse) {
  if (!vmm::CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device present";
  ScopedRegistry reg("gpu");
  reg.config.gpu_utilization = "4G";
  auto backend = std::make_shared<vmm::CudaBackend>(0);
  auto link = limits::InstanceRegistration::create(
      reg.config,
      {"gpu-a", "llama", "cuda0", backend->memory_info().total_bytes, limits::format::kUnlimited});
  kv::KvCacheConfig c;
  c.geometry = {32, 8, 128, 2, 16, kv::KvKind::kKeyValue};  // 2 MiB per interleaved block
  c.layout = kv::KvLayout::kInterleaved;
  c.num_blocks = 1024;
  c.reserve_pages = 1;
  c.max_idle_pages = 1000;
  c.registry_link = link;
  kv::KvCache cache(backend, c);
  const uint64_t page = cache.stats().page_bytes;
  const auto& g = cache.config().geometry;
  auto keep = cache.alloc(40);
  auto drop = cache.alloc(400);
  const char* err = nullptr;
  for (auto id : keep) {
    const kv::TensorView v = cache.tensor(5, 1);
    ASSERT_TRUE(gpu_fill_pattern(v.base + id.value * v.block_stride_bytes, g.block_bytes(),
                                 static_cast<uint32_t>(id.value), &err))
        << err;
  }
  cache.free(drop);
  const uint64_t in_use = cache.stats().in_use_bytes;
  const uint64_t free_before = backend->memory_info().free_bytes;
  ASSERT_GT(link->charged_bytes(), in_use + 10 * page);

  const uint64_t limit = in_use + page;
  limits::Registry(reg.config).set_limit("gpu-a", limit);
  ASSERT_TRUE(wait_until([&] { return link->charged_bytes() <= limit; }, std::chrono::seconds(10)));
  EXPECT_GE(backend->memory_info().free_bytes, free_before + 8 * page);  // the driver has it back
  for (auto id : keep) {
    const kv::TensorView v = cache.tensor(5, 1);
    EXPECT_EQ(gpu_count_mismatches(v.base + id.value * v.block_stride_bytes, g.block_bytes(),
                                   static_cast<uint32_t>(id.value)),
              0);
  }
  EXPECT_THROW(cache.alloc(400), OutOfMemory);
  cache.free(keep);
}

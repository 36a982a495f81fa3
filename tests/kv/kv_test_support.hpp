#pragma once
// Small geometries and host backends shared by the kv tests.
#include <memory>

#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/vmm/fault_injecting_backend.hpp"
#include "kvpager/vmm/host_backend.hpp"

namespace kvpager::testing {

constexpr size_t kTestGranularity = 64 * 1024;

// 4 layers, 2 KV heads x 64, fp16, 16-token blocks: 4 KiB per block per layer and K/V,
// 32 KiB per interleaved cell (2 blocks per 64 KiB page); 16 blocks per per-layer page.
inline kv::KvGeometry small_geometry() {
  kv::KvGeometry g;
  g.num_layers = 4;
  g.kv_heads = 2;
  g.head_dim = 64;
  g.dtype_bytes = 2;
  g.block_size = 16;
  return g;
}

inline std::shared_ptr<vmm::HostBackend> test_host_backend(uint64_t capacity = 0) {
  return std::make_shared<vmm::HostBackend>(vmm::HostBackendConfig{kTestGranularity, capacity});
}

inline kv::KvCacheConfig small_cache_config(kv::KvLayout layout, uint64_t num_blocks,
                                            bool background = false) {
  kv::KvCacheConfig c;
  c.geometry = small_geometry();
  c.layout = layout;
  c.num_blocks = num_blocks;
  c.handle_bytes = kTestGranularity;
  c.reserve_pages = background ? 1 : 0;
  c.max_idle_pages = background ? 2 : 1000000;
  c.background = background;
  c.pool_min_ready = background ? 2 : 0;
  c.pool_max_ready = 8;
  return c;
}

}  // namespace kvpager::testing

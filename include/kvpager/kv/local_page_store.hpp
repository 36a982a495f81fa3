#pragma once
// LocalPageStore: the PageStore of an ordinary KvCache: a PagePool (charging the cache's
// budget for every handle it creates) and a KvSpace on one backend, both in this process.
// handle_bytes and num_blocks come resolved (KvCache picks them from the backend and config).
// Ownership: owns the pool and the space (the space is destroyed first and gives its handles
// back). Thread safety: as KvSpace and PagePool (see page_store.hpp).
#include <memory>

#include "kvpager/kv/kv_space.hpp"
#include "kvpager/kv/page_store.hpp"
#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::kv {

class LocalPageStore final : public PageStore {
 public:
  LocalPageStore(std::shared_ptr<vmm::Backend> backend,
                 std::shared_ptr<limits::MemoryBudget> budget, const pool::PagePoolConfig& pool,
                 const KvSpaceConfig& space);
  ~LocalPageStore() override;

  uint32_t num_pages() const override { return space_->num_pages(); }
  uint64_t num_blocks() const override { return space_->num_blocks(); }
  uint64_t handle_bytes() const override { return space_->handle_bytes(); }
  uint64_t page_bytes() const override { return space_->page_bytes(); }
  BlockRange blocks_of_page(PageId page) const override { return space_->blocks_of_page(page); }
  uint64_t block_stride_bytes() const override { return space_->tensor(0, 0).block_stride_bytes; }
  uint64_t virtual_bytes() const override { return space_->reserved_bytes(); }
  uint32_t mapped_pages() const override { return space_->mapped_pages(); }
  uint32_t peak_mapped_pages() const override { return space_->peak_mapped_pages(); }
  void map_page(PageId page) override { space_->map_page(page); }
  void unmap_page(PageId page) override { space_->unmap_page(page); }
  void wait_for_stream(uintptr_t stream) override { backend_->wait_for_stream(stream); }
  void prepare_background_thread() override { backend_->prepare_background_thread(); }
  pool::PagePoolStats pool_stats() const override { return pool_->stats(); }
  void release_ready() override { pool_->trim(); }
  const KvSpace* local_space() const override { return space_.get(); }

 private:
  std::shared_ptr<vmm::Backend> backend_;
  std::unique_ptr<pool::PagePool> pool_;
  std::unique_ptr<KvSpace> space_;
};

}  // namespace kvpager::kv

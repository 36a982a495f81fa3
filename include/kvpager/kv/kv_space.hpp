#pragma once
// KvSpace: the virtual KV tensors of one model instance and the state of each logical page.
//
// The space reserves virtual addresses for `num_blocks` blocks in the chosen layout and maps
// physical handles (from a PagePool) page by page. A logical page p covers the same byte range
// [p*H, (p+1)*H) of every tensor (H = handle_bytes); a block belongs to page p when it lies
// entirely inside that range (a block that would straddle two pages is never handed out).
//
// Page states: kReserved -> kMapping -> kMapped -> kUnmapping -> kReserved.
// map_page() is all-or-nothing: on a failure at any step it undoes what it did (unmaps, puts
// the zero page back, returns handles to the pool) and rethrows.
// With `zero_fill_unmapped`, every unmapped page is backed by one shared read-only handle of
// zeros, so a stray read (a padded block-table slot under a CUDA graph) never faults.
//
// Thread safety: map_page/unmap_page may run concurrently for distinct pages; calling them for
// a page in the wrong state throws InvalidArgument. Const queries are thread-safe.
// Ownership: the space owns its reservation, the zero handle and the handles of mapped pages;
// the destructor unmaps everything and returns handles to the pool (the pool must outlive it).
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvpager/common/ids.hpp"
#include "kvpager/kv/block_range.hpp"
#include "kvpager/kv/kv_geometry.hpp"
#include "kvpager/pool/page_pool.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::kv {

struct KvSpaceConfig {
  KvGeometry geometry;
  KvLayout layout = KvLayout::kInterleaved;
  uint64_t num_blocks = 0;  // virtual capacity (blocks); must be positive
  bool zero_fill_unmapped = false;
};

// Where one layer's K, V or latent tensor lives: element (block b, token t, head h, dim d) is at
// base + b * block_stride_bytes + ((t * kv_heads + h) * head_dim + d) * dtype_bytes  (NHD).
struct TensorView {
  uintptr_t base = 0;
  uint64_t block_stride_bytes = 0;
  uint64_t num_blocks = 0;
  uint32_t block_size = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t dtype_bytes = 0;
};

// The blocks lying wholly in page `page` of a space whose tensors have `cell_bytes` between
// blocks, `handle_bytes` per page and `num_blocks` blocks (what KvSpace::blocks_of_page
// answers; a scheduler without the space computes its page table with it).
BlockRange page_blocks(uint64_t handle_bytes, uint64_t cell_bytes, uint64_t num_blocks,
                       uint32_t page);

enum class PageState : uint8_t { kReserved, kMapping, kMapped, kUnmapping };

class KvSpace {
 public:
  // The pool's handle size is the page granularity of every tensor. For the interleaved layout
  // it must hold at least one block of all layers (InvalidArgument names the minimum).
  KvSpace(std::shared_ptr<vmm::Backend> backend, pool::PagePool& pool, KvSpaceConfig config);
  ~KvSpace();
  KvSpace(const KvSpace&) = delete;
  KvSpace& operator=(const KvSpace&) = delete;

  const KvSpaceConfig& config() const { return config_; }
  uint32_t num_pages() const { return num_pages_; }
  uint64_t num_blocks() const { return config_.num_blocks; }
  uint32_t num_tensors() const { return num_tensors_; }
  size_t handles_per_page() const { return handles_per_page_; }
  uint64_t handle_bytes() const { return handle_bytes_; }
  uint64_t page_bytes() const { return handle_bytes_ * handles_per_page_; }
  uint64_t reserved_bytes() const { return reservation_bytes_; }
  BlockRange blocks_of_page(PageId page) const;
  TensorView tensor(uint32_t layer, uint32_t component) const;

  void map_page(PageId page);
  void unmap_page(PageId page);
  // Maps pages [first, first + count) all or nothing, as map_page() each would, but with one
  // set_access per tensor over the run (the driver's set-access costs about the same for one
  // handle or many contiguous ones): 1 call instead of `count` in the interleaved layout,
  // num_tensors() instead of count x num_tensors() per-layer. map() is still one call per
  // handle. With zero_fill_unmapped it falls back to map_page() page by page.
  void map_run(PageId first, uint32_t count);
  PageState state(PageId page) const;
  uint32_t mapped_pages() const { return mapped_pages_.load(std::memory_order_relaxed); }
  // Most pages mapped at once since construction (a high-water mark for sizing limits).
  uint32_t peak_mapped_pages() const { return peak_mapped_pages_.load(std::memory_order_relaxed); }
  bool zero_page_read_only() const { return zero_read_only_; }

 private:
  uintptr_t page_address(uint32_t tensor, uint32_t page) const;
  void check_page(PageId page) const;
  void transition(PageId page, PageState from, PageState to, const char* op);
  void map_zero(uintptr_t va);
  void setup_zero_page();
  void count_mapped(uint32_t pages);

  std::shared_ptr<vmm::Backend> backend_;
  pool::PagePool& pool_;
  KvSpaceConfig config_;
  uint64_t handle_bytes_ = 0;
  uint64_t cell_bytes_ = 0;    // block stride in every tensor
  uint64_t tensor_bytes_ = 0;  // per-layer layout: bytes reserved per tensor
  uint32_t num_tensors_ = 0;   // layers x components
  uint32_t num_pages_ = 0;
  size_t handles_per_page_ = 0;
  uintptr_t base_ = 0;
  uint64_t reservation_bytes_ = 0;
  std::vector<vmm::PhysicalHandle> handles_;  // [page][handle]
  std::unique_ptr<std::atomic<PageState>[]> states_;
  std::atomic<uint32_t> mapped_pages_{0};
  std::atomic<uint32_t> peak_mapped_pages_{0};
  vmm::PhysicalHandle zero_handle_;
  bool zero_read_only_ = true;
};

}  // namespace kvpager::kv

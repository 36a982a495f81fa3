#pragma once
// PageStore: what backs the logical pages of a KvCache with physical memory. KvCache keeps the
// whole policy (blocks, page states, reserve, idle unmapping, limits, registry, guarantees,
// debts) and asks its store only to map or unmap one claimed page.
//  - LocalPageStore (local_page_store.hpp): a PagePool and a KvSpace in this process, on one
//    backend: the ordinary cache.
//  - tp::TpPageStore (tp/tp_page_store.hpp): the pages of every tensor-parallel rank, each
//    rank's memory in its own process, mapped through the tp broadcast (all or nothing across
//    ranks).
//
// Promises every store keeps:
//  - map_page/unmap_page are all or nothing (for every rank) and may run concurrently for
//    distinct pages; KvCache calls them without its own lock, for pages it claimed.
//  - map_page charges page_bytes() to the budget the store was built with (a refusal is
//    OutOfMemory and changes nothing); unmap_page uncharges it. Ready handles are charged too.
//  - The page table (num_pages, blocks_of_page) never changes after construction.
// Errors: the map/unmap errors of KvSpace (InvalidArgument, OutOfMemory, DriverError, Timeout,
// StateError). Destructors never throw.
#include <cstdint>

#include "kvpager/common/ids.hpp"
#include "kvpager/kv/block_range.hpp"
#include "kvpager/pool/page_pool.hpp"

namespace kvpager::kv {

class KvSpace;

class PageStore {
 public:
  virtual ~PageStore() = default;

  virtual uint32_t num_pages() const = 0;
  virtual uint64_t num_blocks() const = 0;
  // Physical bytes of one logical page of one rank (the handle size times handles per page).
  virtual uint64_t handle_bytes() const = 0;
  // Bytes charged to the budget for one mapped page (all ranks the budget covers).
  virtual uint64_t page_bytes() const = 0;
  virtual BlockRange blocks_of_page(PageId page) const = 0;
  // Bytes from one block to the next in one tensor (the whole cell when interleaved).
  virtual uint64_t block_stride_bytes() const = 0;
  // Virtual bytes reserved for the KV tensors (of one rank).
  virtual uint64_t virtual_bytes() const = 0;
  virtual uint32_t mapped_pages() const = 0;
  virtual uint32_t peak_mapped_pages() const = 0;

  virtual void map_page(PageId page) = 0;
  virtual void unmap_page(PageId page) = 0;
  // Before an unmap: waits for the work queued on `stream` (a CUstream of this process).
  virtual void wait_for_stream(uintptr_t stream) = 0;
  // First call of the cache's mapper thread: vmm::Backend::prepare_background_thread for the
  // backends this process calls from it.
  virtual void prepare_background_thread() = 0;

  // Physical handles held ready (charged, not mapped) and their release (KvCache::trim and
  // the mapper's idle release).
  virtual pool::PagePoolStats pool_stats() const = 0;
  virtual void release_ready() = 0;

  // The KV tensors in this process, or nullptr when they live elsewhere (tp ranks).
  virtual const KvSpace* local_space() const = 0;
};

}  // namespace kvpager::kv

#pragma once
// KvCache: the elastic KV cache of one model instance (one rank). The facade engines use.
//
// Blocks live in reserved virtual memory (KvSpace); physical memory is mapped a page at a time
// only while the page holds blocks in use, plus a small reserve of pages mapped ahead by a
// background thread so that alloc() normally only pops a free list. Fully free pages beyond
// `max_idle_pages` are unmapped by that thread; trim() unmaps every free page at once. The
// page pool's ready handles (physical memory, not mapped) go back to the device once no alloc
// came for `idle_release_ms`: an idle cache holds its mapped pages and nothing else.
// Block 0 is the null block: always mapped, never handed out; engines point padded block-table
// slots at it.
//
// Thread safety: every public method is thread-safe.
// Hot path: alloc(n, span) and free(span) allocate nothing and make no syscall when the mapped
// reserve covers the request (a page mapped synchronously otherwise: the "cold" path).
// Errors: alloc() beyond the limit, the budget or the device throws OutOfMemory (refused by a
// shared budget below its guarantee, it claims the pages it needed); more blocks
// than the cache can ever hold, unknown ids and double frees throw InvalidArgument; an alloc
// that must charge a registry budget whose device lock stays held past the registry's
// lock_timeout (its holder stopped or hung) throws Timeout naming the holder. In every
// case the cache is exactly as before the call (pages mapped by the failed call are unmapped).
// A failure in the background thread is recorded and raised (StateError) by the next call.
// Registry: with `config.registry_link` set, the cache charges the link's budget, its limit is
// the smaller of limit_bytes and the link's instance limit, and the background thread polls the
// link every poll_interval(): it publishes usage, and on a changed limit unmaps free pages above
// it and releases ready handles (so a lowered limit is honoured within about one interval),
// and on device pressure gives back every free page until the next alloc. While the budget
// reports an excess (MemoryBudget::excess_bytes: a limit or device budget lowered below the
// charge) the thread re-checks at every poll: it releases ready handles, then unmaps free
// pages down to the guarantee, and maps no reserve, so blocks freed later are given back too.
// Those decisions are memory_policy.hpp's; the thread gathers its inputs and carries them out.
// Pages: the cache decides which pages are mapped; its PageStore (page_store.hpp) maps them: a
// PagePool + KvSpace in this process (the backend constructor), or any other store (the factory
// constructor; e.g. tp::TpPageStore maps each page on every tensor-parallel rank, whose memory
// lives in other processes: such a cache has no tensors here, tensor() and space() throw).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "kvpager/common/ids.hpp"
#include "kvpager/kv/block_allocator.hpp"
#include "kvpager/kv/kv_geometry.hpp"
#include "kvpager/kv/kv_space.hpp"
#include "kvpager/kv/memory_policy.hpp"
#include "kvpager/kv/page_store.hpp"
#include "kvpager/limits/instance_link.hpp"
#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/pool/page_pool.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::kv {

struct KvCacheConfig {
  KvGeometry geometry;
  KvLayout layout = KvLayout::kInterleaved;  // KVPAGER_LAYOUT
  // Virtual capacity in blocks. 0: as many blocks as the device's total memory holds.
  uint64_t num_blocks = 0;
  // Physical handle size. 0: the backend granularity for the per-layer layout; for the
  // interleaved layout, room for `interleaved_blocks_per_page` all-layer blocks rounded up to
  // the granularity (fewer, larger handles: a map costs about the same whatever its size).
  // KVPAGER_HANDLE_SIZE.
  uint64_t handle_bytes = 0;
  uint32_t interleaved_blocks_per_page = 16;
  uint64_t limit_bytes = 0;   // mapped-memory limit; 0 = none. KVPAGER_LIMIT.
  size_t reserve_pages = 1;   // free pages kept mapped ahead. KVPAGER_RESERVE_PAGES.
  size_t max_idle_pages = 4;  // free mapped pages beyond this are unmapped. KVPAGER_MAX_IDLE_PAGES.
  bool zero_fill_unmapped =
      false;                  // back unmapped pages with a read-only zero page. KVPAGER_ZERO_FILL.
  bool background = true;     // mapper and pool threads; false: everything inline
  size_t pool_min_ready = 2;  // physical handles created ahead (PagePool watermarks).
  size_t pool_max_ready = 8;  // KVPAGER_POOL_MIN_READY, KVPAGER_POOL_MAX_READY
  // After this long without an alloc the pool's ready handles are released (until the next
  // alloc), so an idle cache holds only its mapped pages. 0: never. KVPAGER_IDLE_RELEASE_MS.
  uint32_t idle_release_ms = 1000;
  // When set, unmapping waits for the work queued so far on this CUstream (an event, never a
  // device-wide sync), so no kernel still reading a freed block loses its memory.
  uintptr_t stream = 0;
  bool wait_for_stream_before_unmap = false;
  // Entry in the shared-memory registry to follow (limits/instance_registration.hpp); its
  // budget is used when the constructor gets none. Needs `background`.
  std::shared_ptr<limits::InstanceLink> registry_link;
};

// Fills unset knobs of `config` from KVPAGER_* environment variables (see field comments).
KvCacheConfig kv_cache_config_from_env(KvCacheConfig config);

// The handle size a cache with `config` uses on a device of `granularity` (config.handle_bytes
// when set, a multiple of it; else see KvCacheConfig::handle_bytes). InvalidArgument otherwise.
uint64_t choose_handle_bytes(const KvCacheConfig& config, uint64_t granularity);

// Builds the store of a cache: `config` with geometry, layout and limits as given; `budget` is
// the one the store must charge (the cache's, resolved from the registry link).
using PageStoreFactory = std::function<std::unique_ptr<PageStore>(
    const KvCacheConfig& config, std::shared_ptr<limits::MemoryBudget> budget)>;

struct KvCacheStats {
  uint64_t num_blocks = 0;          // virtual capacity
  uint64_t usable_blocks = 0;       // blocks that can ever be handed out (null block excluded)
  uint64_t blocks_in_use = 0;       // handed out, null block excluded
  uint64_t free_mapped_blocks = 0;  // allocatable without mapping
  uint64_t available_blocks = 0;    // allocatable now, mapping more within the limit
  // as available_blocks if the budget (shared with other caches or processes) held nothing of
  // theirs: more than available_blocks means others hold the room (waiting may help)
  uint64_t available_within_limit_blocks = 0;
  uint64_t guarantee_bytes = 0;  // the registry's guaranteed share (0: none or no registry)
  // to give back for other instances' claims on their guarantees: free pages worth this much
  // are being unmapped, and while it is above 0 available_blocks is 0
  uint64_t owed_bytes = 0;
  uint32_t num_pages = 0;
  uint32_t mapped_pages = 0;
  uint32_t free_pages = 0;  // mapped with no block in use
  uint32_t max_blocks_per_page = 0;
  uint64_t page_bytes = 0;  // physical bytes of one logical page (all its handles)
  uint64_t mapped_bytes = 0;
  uint64_t peak_mapped_bytes = 0;  // most bytes mapped at once since construction
  uint64_t in_use_bytes = 0;       // bytes of pages holding at least one block in use
  uint64_t limit_bytes = 0;  // in force: own or registry's (kvpager limit), the smaller; 0 = none
  uint64_t virtual_bytes = 0;
  uint64_t alloc_calls = 0;
  uint64_t free_calls = 0;
  uint64_t cold_allocs = 0;  // allocs that mapped pages themselves
  uint64_t pages_mapped_total = 0;
  uint64_t pages_unmapped_total = 0;
  uint64_t pages_given_back_total = 0;  // of those, unmapped to pay what was owed (owed_bytes)
  pool::PagePoolStats pool;
};

class KvCache {
 public:
  KvCache(std::shared_ptr<vmm::Backend> backend, KvCacheConfig config,
          std::shared_ptr<limits::MemoryBudget> budget = nullptr);
  // A cache whose pages `make_store` backs; config.handle_bytes and num_blocks become the
  // store's.
  KvCache(const PageStoreFactory& make_store, KvCacheConfig config,
          std::shared_ptr<limits::MemoryBudget> budget = nullptr);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  void alloc(size_t n, std::span<BlockId> out);
  std::vector<BlockId> alloc(size_t n);
  void free(std::span<const BlockId> ids);

  // Blocks alloc() could hand out now: free mapped blocks plus the blocks of pages it could map
  // within the limit and what the budget has left (with a shared budget, what other caches or
  // processes hold is not counted, nor what their claims on their guarantees keep). A
  // snapshot: others may take the budget before alloc(). 0 while this cache owes pages to a
  // claim (stats().owed_bytes): alloc() still hands out free mapped blocks, so running work can
  // finish, but an engine admitting by available() frees blocks until whole pages come free.
  size_t available() const;
  // The pages this cache owes to other instances' claims (stats().owed_bytes) beyond what its
  // free pages and ready handles pay (the mapper gives those back first), in blocks: what an
  // engine should free (preempt) to pay it at once. Usually 0.
  size_t owed_blocks() const;
  // For a caller that waits because others sharing the budget hold the room (available() is
  // short while stats().available_within_limit_blocks is not): asks the other registry
  // instances on the device to give back their free pages and ready handles, as a refused
  // alloc would, and below its guarantee claims the pages `blocks` more blocks need beyond the
  // free mapped ones (0: its whole guarantee). No-op without a registry link. Never throws.
  void ask_for_room(size_t blocks = 0) noexcept;
  uint64_t mapped_bytes() const;
  // Sets the mapped-memory limit (0 = none). Shrinking unmaps free pages down to the limit at
  // once; pages holding blocks in use stay until their blocks are freed.
  void resize(uint64_t limit_bytes);
  // Unmaps every free page (the reserve too, until the next alloc) and releases the pool's ready
  // handles. Returns the bytes unmapped.
  uint64_t trim();
  KvCacheStats stats() const;

  // Makes unmapping wait for the work queued on `stream` (a CUstream; 0 is the legacy default
  // stream) instead of config.stream, for engines that create their compute stream after the
  // cache. Takes effect for the next unmap.
  void set_unmap_stream(uintptr_t stream);
  BlockId null_block() const { return BlockId{0}; }
  // The KV tensors in this process; StateError for a cache whose store keeps them elsewhere.
  TensorView tensor(uint32_t layer, uint32_t component) const;
  const KvSpace& space() const;
  const PageStore& store() const { return *store_; }
  const KvCacheConfig& config() const { return config_; }
  bool is_allocated(BlockId id) const;

 private:
  size_t limit_pages_locked() const;
  // available() under the lock; without the budget: as if no one else charged the budget.
  size_t available_locked(bool within_budget) const;
  // Pages the budget covers now: the pool's ready (and releasing) handles plus the headroom.
  size_t budget_pages_locked() const;
  uint64_t limit_bytes_locked() const;  // effective limit; 0 = none
  // The page counts the memory policy decides from.
  PageCounts page_counts_locked() const;
  // Registry poll from the mapper thread: publishes usage, returns the events.
  LinkPoll poll_link_locked();
  void check_healthy_locked() const;
  // Maps pages until `blocks_needed` more blocks are free; unlocks while mapping. All or
  // nothing: OutOfMemory before mapping anything when the limit or the budget cannot cover the
  // pages (for a demand alloc, request > 0, a budget refusal asks the registry for room); on a
  // later failure every page mapped here is unmapped again, then it rethrows.
  void map_for_locked(std::unique_lock<std::mutex>& lock, size_t blocks_needed, size_t request);
  // The claim (bytes beyond the budget's charge) for holding `pages` more pages than are
  // mapped; 0 when the charge covers them.
  uint64_t claim_bytes_locked(size_t pages) const;
  // Unmaps one claimed free page outside the lock; false if no free page.
  bool unmap_one_locked(std::unique_lock<std::mutex>& lock);
  void unmap_claimed(uint32_t page);
  void run_mapper();

  std::shared_ptr<limits::MemoryBudget> budget_;
  KvCacheConfig config_;
  std::unique_ptr<PageStore> store_;
  std::unique_ptr<BlockAllocator> allocator_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // wakes the mapper and waiters on pages in transition
  bool stopping_ = false;
  MemoryPolicyConfig policy_config_;  // from config_ (reserve, idle pages, idle release)
  MemoryPolicyState policy_;          // the mapper's decisions between steps (memory_policy.hpp)
  std::string broken_;                // first failure of the mapper thread
  // The stream unmapping waits for (config_.stream until set_unmap_stream), if any.
  std::atomic<uintptr_t> unmap_stream_{0};
  std::atomic<bool> wait_for_stream_{false};
  KvCacheStats counters_;
  std::thread mapper_;
};

}  // namespace kvpager::kv

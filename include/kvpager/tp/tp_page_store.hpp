#pragma once
// TpPageStore: the kv::PageStore of a tensor-parallel KvCache on the scheduler side. The cache
// in the scheduler's process keeps the whole policy (blocks, reserve, idle unmapping, limits,
// registry, guarantees, debts); this store maps and unmaps each page on every rank through a
// TpScheduler over channels to rank servers it connected to (RankServer, running in the
// engine's worker processes), all or nothing across ranks (a failure on some ranks rolls the
// others back; see tp_scheduler.hpp). The scheduler's process holds no KV memory: the cache's
// tensor()/space() throw StateError there.
//
// Page table: taken from the ranks' hellos (handle size, block stride, blocks), which must be
// the same on every rank and agree with the cache config's geometry and num_blocks (when
// given); every rank must start with no page mapped. InvalidArgument names the rank otherwise.
//
// Budget (what is charged where): one budget, the cache's (its registry entry is on rank 0's
// device). A mapped page charges handle bytes x handles per page for each rank on the same
// device as rank 0: tp_size x that when every rank shares one device (the host backend, or
// tp ranks on one GPU), one rank's share when each rank has its own device. The other devices
// are not charged (known limit: accounting on several devices at once is not built; the
// ranks' memory there equals rank 0's). Ranks keep no ready handles (their pools hold none), so
// the charge is exactly what the ranks have mapped.
//
// Thread safety: map_page/unmap_page may be called from several threads; they take turns on
// one mutex (the broadcast is driven by one thread at a time). Lock order: KvCache's mutex is
// never held across these calls; the store's mutex, then the registry budget's lock.
// Errors: the constructor throws Timeout when a rank never listens, StateError when one refused
// (another uid, pages of its own mapped) or died; map/unmap throw TpScheduler's errors, and
// OutOfMemory when the budget refuses (nothing sent to any rank).
// Ownership: owns the TpScheduler and its channels; the destructor ends every rank's session
// (each then unmaps what it holds) and uncharges the pages still mapped.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/kv/page_store.hpp"
#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/tp/tp_scheduler.hpp"

namespace kvpager::tp {

struct TpStoreConfig {
  std::string token;  // the engine's channel token (unix_channel.hpp)
  // tp_size (the ranks to connect to), strategy (default "async": one epoll loop; "seq" and
  // "thread" work too), timeout, start_timeout (also bounds connecting).
  TpConfig tp = [] {
    TpConfig c;
    c.strategy = "async";
    return c;
  }();
};

class TpPageStore final : public kv::PageStore {
 public:
  TpPageStore(const TpStoreConfig& config, const kv::KvCacheConfig& cache,
              std::shared_ptr<limits::MemoryBudget> budget);
  ~TpPageStore() override;

  // The factory for KvCache's store constructor.
  static kv::PageStoreFactory factory(TpStoreConfig config);

  uint32_t num_pages() const override { return num_pages_; }
  uint64_t num_blocks() const override { return num_blocks_; }
  uint64_t handle_bytes() const override { return handle_bytes_; }
  uint64_t page_bytes() const override { return charge_bytes_; }
  kv::BlockRange blocks_of_page(PageId page) const override;
  uint64_t block_stride_bytes() const override { return cell_bytes_; }
  uint64_t virtual_bytes() const override { return virtual_bytes_; }
  uint32_t mapped_pages() const override { return mapped_.load(); }
  uint32_t peak_mapped_pages() const override { return peak_.load(); }
  void map_page(PageId page) override;
  void unmap_page(PageId page) override;
  void wait_for_stream(uintptr_t) override {}  // each rank waits on its own stream
  // Maps and unmaps are posted to the ranks, whose server threads prepare themselves: this
  // process makes no driver call for them.
  void prepare_background_thread() override {}
  pool::PagePoolStats pool_stats() const override { return {}; }
  void release_ready() override {}
  const kv::KvSpace* local_space() const override { return nullptr; }

  int tp_size() const { return scheduler_->tp_size(); }
  // Ranks whose pages the budget is charged for (those on rank 0's device).
  int charged_ranks() const { return charged_ranks_; }
  // Every rank's view (mapped pages, checksum); serialised with map/unmap.
  std::vector<RankState> query();

 private:
  std::shared_ptr<limits::MemoryBudget> budget_;
  std::unique_ptr<TpScheduler> scheduler_;
  mutable std::mutex mutex_;  // one broadcast at a time
  uint32_t num_pages_ = 0;
  uint64_t num_blocks_ = 0;
  uint64_t handle_bytes_ = 0;  // of one rank's logical page (all its handles)
  uint64_t cell_bytes_ = 0;
  uint64_t charge_bytes_ = 0;
  uint64_t virtual_bytes_ = 0;
  int charged_ranks_ = 0;
  std::atomic<uint32_t> mapped_{0};
  std::atomic<uint32_t> peak_{0};
};

}  // namespace kvpager::tp

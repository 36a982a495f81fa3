#include "kvpager/tp/tp_page_store.hpp"

#include <vector>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_space.hpp"
#include "kvpager/tp/socket_link.hpp"
#include "kvpager/tp/unix_channel.hpp"

namespace kvpager::tp {

namespace {

std::unique_ptr<TpScheduler> connect_ranks(const TpStoreConfig& config) {
  if (config.tp.tp_size < 1 || config.tp.tp_size > kMaxRanks) {
    throw InvalidArgument("tp size " + std::to_string(config.tp.tp_size) + " must be 1.." +
                          std::to_string(kMaxRanks) + " (before connecting to any rank)");
  }
  const auto deadline = Clock::now() + config.tp.start_timeout;
  std::vector<std::unique_ptr<RankLink>> links;
  for (int r = 0; r < config.tp.tp_size; ++r) {
    const RankId rank(static_cast<uint32_t>(r));
    links.push_back(std::make_unique<SocketLink>(
        rank, connect_channel(rank_channel_name(config.token, rank), deadline)));
  }
  return std::make_unique<TpScheduler>(config.tp, std::move(links));
}

std::string rank_mismatch(int rank, const char* what, uint64_t got, uint64_t want) {
  return "tp rank " + std::to_string(rank) + " reports " + what + " " + std::to_string(got) +
         " where " + std::to_string(want) +
         " was expected: every rank and the scheduler must describe the same per-rank KV "
         "geometry, layout, blocks and page size";
}

}  // namespace

TpPageStore::TpPageStore(const TpStoreConfig& config, const kv::KvCacheConfig& cache,
                         std::shared_ptr<limits::MemoryBudget> budget)
    : budget_(std::move(budget)), scheduler_(connect_ranks(config)) {
  const auto hellos = scheduler_->hellos();
  const Reply& first = hellos[0];
  const uint64_t expected_cell = cache.layout == kv::KvLayout::kInterleaved
                                     ? cache.geometry.block_bytes_all_layers()
                                     : cache.geometry.block_bytes();
  for (int r = 0; r < static_cast<int>(hellos.size()); ++r) {
    const Reply& h = hellos[static_cast<size_t>(r)];
    if (h.cell_bytes != expected_cell) {
      throw InvalidArgument(rank_mismatch(r, "a block stride of", h.cell_bytes, expected_cell));
    }
    if (cache.num_blocks != 0 && h.num_blocks != cache.num_blocks) {
      throw InvalidArgument(rank_mismatch(r, "blocks:", h.num_blocks, cache.num_blocks));
    }
    if (h.num_blocks != first.num_blocks) {
      throw InvalidArgument(rank_mismatch(r, "blocks:", h.num_blocks, first.num_blocks));
    }
    if (h.handle_bytes * h.handles_per_page != first.handle_bytes * first.handles_per_page ||
        h.num_pages != first.num_pages) {
      throw InvalidArgument(rank_mismatch(r, "pages of bytes", h.handle_bytes, first.handle_bytes));
    }
    if (h.mapped_pages != 0) {
      throw InvalidArgument("tp rank " + std::to_string(r) + " starts with " +
                            std::to_string(h.mapped_pages) + " pages mapped; expected none");
    }
    if (h.device_kind == first.device_kind && h.device == first.device) ++charged_ranks_;
  }
  num_pages_ = first.num_pages;
  num_blocks_ = first.num_blocks;
  handle_bytes_ = first.handle_bytes;
  cell_bytes_ = first.cell_bytes;
  charge_bytes_ = first.handle_bytes * first.handles_per_page * charged_ranks_;
  virtual_bytes_ = uint64_t{num_pages_} * first.handle_bytes * first.handles_per_page;
}

TpPageStore::~TpPageStore() {
  std::lock_guard lock(mutex_);
  try {
    scheduler_->shutdown();  // every rank ends its session and unmaps what it holds
  } catch (...) {
  }
  budget_->uncharge(uint64_t{mapped_.load()} * charge_bytes_);
}

kv::PageStoreFactory TpPageStore::factory(TpStoreConfig config) {
  return [config = std::move(config)](const kv::KvCacheConfig& cache,
                                      std::shared_ptr<limits::MemoryBudget> budget) {
    return std::make_unique<TpPageStore>(config, cache, std::move(budget));
  };
}

kv::BlockRange TpPageStore::blocks_of_page(PageId page) const {
  if (page.value >= num_pages_) {
    throw InvalidArgument("tp KV cache: page " + std::to_string(page.value) + " beyond its " +
                          std::to_string(num_pages_) + " pages");
  }
  return kv::page_blocks(handle_bytes_, cell_bytes_, num_blocks_, page.value);
}

void TpPageStore::map_page(PageId page) {
  std::lock_guard lock(mutex_);
  if (!budget_->try_charge(charge_bytes_)) {
    throw OutOfMemory("tp KV cache: the memory budget of " + format_size(budget_->limit_bytes()) +
                      " is reached (" + format_size(budget_->charged_bytes()) +
                      " charged; a page " + "costs " + format_size(charge_bytes_) + " over " +
                      std::to_string(charged_ranks_) +
                      " rank(s)); free or trim blocks, or raise the limit");
  }
  try {
    scheduler_->map({&page, 1});
  } catch (...) {
    budget_->uncharge(charge_bytes_);
    throw;
  }
  const uint32_t now = mapped_.fetch_add(1) + 1;
  if (now > peak_.load()) peak_.store(now);
}

void TpPageStore::unmap_page(PageId page) {
  std::lock_guard lock(mutex_);
  scheduler_->unmap({&page, 1});
  budget_->uncharge(charge_bytes_);
  mapped_.fetch_sub(1);
}

std::vector<RankState> TpPageStore::query() {
  std::lock_guard lock(mutex_);
  return scheduler_->query();
}

}  // namespace kvpager::tp

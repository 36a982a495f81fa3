#include "kvpager/kv/kv_cache.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>

#include "kvpager/common/env_number.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/local_page_store.hpp"

namespace kvpager::kv {

namespace {

uint64_t choose_num_blocks(const vmm::Backend& backend, const KvCacheConfig& c) {
  if (c.num_blocks != 0) {
    return c.num_blocks;
  }
  const uint64_t per_block = c.geometry.block_bytes_all_layers();
  return std::min<uint64_t>(backend.memory_info().total_bytes / per_block, INT32_MAX);
}

std::vector<BlockRange> page_table(const PageStore& store) {
  std::vector<BlockRange> pages(store.num_pages());
  for (uint32_t p = 0; p < store.num_pages(); ++p) {
    pages[p] = store.blocks_of_page(PageId{p});
  }
  return pages;
}

PageStoreFactory local_store(std::shared_ptr<vmm::Backend> backend) {
  return [backend = std::move(backend)](const KvCacheConfig& c,
                                        std::shared_ptr<limits::MemoryBudget> budget) {
    const uint64_t handle = choose_handle_bytes(c, backend->granularity());
    return std::make_unique<LocalPageStore>(
        backend, std::move(budget),
        pool::PagePoolConfig{handle, c.pool_min_ready, c.pool_max_ready, c.background},
        KvSpaceConfig{c.geometry, c.layout, choose_num_blocks(*backend, c), c.zero_fill_unmapped});
  };
}

// Blocks handed out, the null block excluded. The null block is reserved only once its page
// is mapped (a limit below one page refuses even that), so it is not always there to subtract.
size_t blocks_handed_out(const BlockAllocator& a) {
  return a.used_blocks() == 0 ? 0 : a.used_blocks() - 1;
}

}  // namespace

uint64_t choose_handle_bytes(const KvCacheConfig& c, uint64_t g) {
  uint64_t h = c.handle_bytes == 0 ? g : c.handle_bytes;
  if (h % g != 0) {
    throw InvalidArgument("KV cache: handle size " + format_size(h) +
                          " is not a multiple of the device granularity " + format_size(g));
  }
  if (c.handle_bytes == 0 && c.layout == KvLayout::kInterleaved) {
    const uint64_t cells = std::max<uint32_t>(1, c.interleaved_blocks_per_page);
    h = std::max(h, round_up(c.geometry.block_bytes_all_layers() * cells, g));
  }
  return h;
}

KvCacheConfig kv_cache_config_from_env(KvCacheConfig c) {
  auto env = [](const char* name) { return std::getenv(name); };
  auto number = [](const char* name, const char* v) -> size_t {
    return parse_env_number(name, v, "a non-negative integer");
  };
  if (const char* v = env("KVPAGER_LAYOUT")) {
    c.layout = parse_layout(v);
  }
  if (const char* v = env("KVPAGER_HANDLE_SIZE")) {
    c.handle_bytes = parse_size(v);
  }
  if (const char* v = env("KVPAGER_LIMIT")) {
    c.limit_bytes = parse_size(v);
  }
  if (const char* v = env("KVPAGER_RESERVE_PAGES")) {
    c.reserve_pages = number("KVPAGER_RESERVE_PAGES", v);
  }
  if (const char* v = env("KVPAGER_MAX_IDLE_PAGES")) {
    c.max_idle_pages = number("KVPAGER_MAX_IDLE_PAGES", v);
  }
  if (const char* v = env("KVPAGER_POOL_MIN_READY")) {
    c.pool_min_ready = number("KVPAGER_POOL_MIN_READY", v);
  }
  if (const char* v = env("KVPAGER_POOL_MAX_READY")) {
    c.pool_max_ready = number("KVPAGER_POOL_MAX_READY", v);
  }
  if (const char* v = env("KVPAGER_IDLE_RELEASE_MS")) {
    c.idle_release_ms = static_cast<uint32_t>(number("KVPAGER_IDLE_RELEASE_MS", v));
  }
  if (const char* v = env("KVPAGER_ZERO_FILL")) {
    c.zero_fill_unmapped = std::string(v) == "1";
  }
  return c;
}

KvCache::KvCache(std::shared_ptr<vmm::Backend> backend, KvCacheConfig config,
                 std::shared_ptr<limits::MemoryBudget> budget)
    : KvCache(local_store(std::move(backend)), std::move(config), std::move(budget)) {}

KvCache::KvCache(const PageStoreFactory& make_store, KvCacheConfig config,
                 std::shared_ptr<limits::MemoryBudget> budget)
    : budget_(std::move(budget)), config_(std::move(config)) {
  config_.geometry.validate();
  unmap_stream_.store(config_.stream);
  wait_for_stream_.store(config_.wait_for_stream_before_unmap);
  if (config_.max_idle_pages < config_.reserve_pages) {
    throw InvalidArgument("KV cache: max_idle_pages (" + std::to_string(config_.max_idle_pages) +
                          ") must be at least reserve_pages (" +
                          std::to_string(config_.reserve_pages) + ")");
  }
  if (config_.registry_link && !config_.background) {
    throw InvalidArgument("KV cache: following a registry entry needs the background thread");
  }
  if (!budget_ && config_.registry_link) {
    budget_ = config_.registry_link->budget();
  }
  if (!budget_) {
    budget_ = std::make_shared<limits::LocalBudget>();
  }
  policy_config_ = MemoryPolicyConfig{config_.reserve_pages, config_.max_idle_pages,
                                      std::chrono::milliseconds(config_.idle_release_ms)};
  store_ = make_store(config_, budget_);
  config_.handle_bytes = store_->handle_bytes();
  config_.num_blocks = store_->num_blocks();
  allocator_ = std::make_unique<BlockAllocator>(page_table(*store_),
                                                static_cast<int32_t>(config_.num_blocks));
  if (allocator_->usable_blocks() < 2) {
    throw InvalidArgument("KV cache: capacity must hold the null block and at least one more");
  }
  // The null block's page is mapped for the life of the cache.
  {
    std::unique_lock lock(mutex_);
    map_for_locked(lock, 1, 1);
    allocator_->reserve_block(null_block());
  }
  if (config_.background) {
    mapper_ = std::thread([this] { run_mapper(); });
  }
}

KvCache::~KvCache() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (mapper_.joinable()) {
    mapper_.join();
  }
  // store_ unmaps every page and releases every handle.
}

const KvSpace& KvCache::space() const {
  if (const KvSpace* space = store_->local_space()) {
    return *space;
  }
  throw StateError(
      "this KV cache maps its pages in other processes (tensor-parallel ranks): its tensors "
      "live there (each rank's TpRankServer), not in this process");
}

TensorView KvCache::tensor(uint32_t layer, uint32_t component) const {
  return space().tensor(layer, component);
}

uint64_t KvCache::limit_bytes_locked() const {
  uint64_t limit = config_.limit_bytes;
  if (config_.registry_link) {
    const uint64_t linked = config_.registry_link->instance_limit_bytes();
    if (limit == 0 || linked < limit) {
      limit = linked;
    }
  }
  return limit;
}

size_t KvCache::limit_pages_locked() const {
  const uint64_t all = store_->num_pages();
  const uint64_t limit = limit_bytes_locked();
  return static_cast<size_t>(limit == 0 ? all : std::min(limit / store_->page_bytes(), all));
}

PageCounts KvCache::page_counts_locked() const {
  return PageCounts{allocator_->mapped_pages(), allocator_->free_pages(),
                    allocator_->unmapped_pages(), allocator_->pages_in_transition(),
                    limit_pages_locked()};
}

void KvCache::check_healthy_locked() const {
  if (!broken_.empty()) {
    throw StateError("KV cache background mapper failed: " + broken_);
  }
}

void KvCache::map_for_locked(std::unique_lock<std::mutex>& lock, size_t blocks_needed,
                             size_t request) {
  std::vector<uint32_t> claimed;
  size_t incoming = 0;
  while (incoming < blocks_needed) {
    const size_t committed = allocator_->mapped_pages() + allocator_->pages_in_transition();
    const bool at_limit = committed >= limit_pages_locked();
    std::optional<uint32_t> page;
    if (!at_limit) {
      page = allocator_->claim_unmapped_page();
    }
    if (!page) {
      for (uint32_t p : claimed) {
        allocator_->finish_mapping(p, false);
      }
      const uint64_t pb = store_->page_bytes();
      throw OutOfMemory("alloc of " + std::to_string(request) + " blocks: " +
                        (at_limit
                             ? "the limit of " + format_size(limit_bytes_locked()) + " is reached"
                             : std::string("every page of the KV space is mapped")) +
                        " (" + format_size(allocator_->mapped_pages() * pb) + " mapped, " +
                        std::to_string(blocks_handed_out(*allocator_)) + " blocks in use, " +
                        std::to_string(allocator_->free_mapped_blocks()) +
                        " free); free blocks or raise the limit");
    }
    claimed.push_back(*page);
    incoming += static_cast<size_t>(allocator_->page_blocks(*page).count);
  }
  // A budget that cannot cover the pages refuses before any is mapped (a snapshot: a member
  // taking the room meanwhile is caught by map_page below). Mapping pages only to unmap them
  // again costs two driver calls per page, on the caller's thread, at every refused alloc.
  if (size_t room = budget_pages_locked(); room < claimed.size()) {
    bool fits = false;
    if (request > 0 && config_.registry_link != nullptr) {
      // As map_page's refused charge would: reclaim dead members, claim what the alloc needs
      // (at least the one handle that charge asked for), raise the device's pressure. A reserve
      // page (request 0) is mapped ahead of demand and refused quietly: it never makes others
      // shed.
      config_.registry_link->ask_for_room(
          std::max<uint64_t>(claim_bytes_locked(claimed.size()), store_->handle_bytes()));
      room = budget_pages_locked();
      fits = room >= claimed.size();  // a dead member's charge came back
    }
    if (!fits) {
      for (uint32_t p : claimed) {
        allocator_->finish_mapping(p, false);
      }
      const uint64_t pb = store_->page_bytes();
      throw OutOfMemory("alloc of " + std::to_string(request) + " blocks: the memory budget of " +
                        format_size(budget_->limit_bytes()) + " has room for " +
                        std::to_string(room) + " more page(s) of " + format_size(pb) + ", " +
                        std::to_string(claimed.size()) + " are needed (" +
                        format_size(budget_->charged_bytes()) + " charged, " +
                        std::to_string(allocator_->free_mapped_blocks()) +
                        " blocks free); free blocks or raise the budget");
    }
  }
  lock.unlock();
  size_t mapped = 0;
  try {
    for (; mapped < claimed.size(); ++mapped) {
      store_->map_page(PageId{claimed[mapped]});
    }
  } catch (...) {
    bool refused = false;  // by the budget: claim what this alloc needed, not one page of it
    try {
      throw;
    } catch (const OutOfMemory&) {
      refused = config_.registry_link != nullptr;
    } catch (...) {
    }
    for (size_t i = 0; i < mapped; ++i) {
      try {
        store_->unmap_page(PageId{claimed[i]});
      } catch (const std::exception& e) {
        lock.lock();
        broken_ = std::string("could not undo a failed mapping: ") + e.what();
        for (size_t j = 0; j < claimed.size(); ++j) {
          allocator_->finish_mapping(claimed[j], j < i);
        }
        changed_.notify_all();
        throw;
      }
    }
    lock.lock();
    for (uint32_t p : claimed) {
      allocator_->finish_mapping(p, false);
    }
    changed_.notify_all();
    if (refused) {
      if (const uint64_t bytes = claim_bytes_locked(claimed.size())) {
        config_.registry_link->ask_for_room(bytes);
      }
    }
    throw;
  }
  lock.lock();
  for (uint32_t p : claimed) {
    allocator_->finish_mapping(p, true);
  }
  counters_.pages_mapped_total += claimed.size();
  changed_.notify_all();
}

void KvCache::alloc(size_t n, std::span<BlockId> out) {
  if (n == 0) {
    return;
  }
  if (out.size() < n) {
    throw InvalidArgument("alloc: output span holds fewer than n blocks");
  }
  std::unique_lock lock(mutex_);
  check_healthy_locked();
  const size_t capacity = allocator_->usable_blocks() - 1;  // null block excluded
  if (n > capacity) {
    throw InvalidArgument("alloc of " + std::to_string(n) + " blocks: the cache holds at most " +
                          std::to_string(capacity) + " blocks");
  }
  ++counters_.alloc_calls;
  policy_ = on_alloc(policy_);
  bool cold = false;
  while (!allocator_->try_alloc(n, out)) {
    if (allocator_->pages_in_transition() > 0) {
      // The mapper is mapping or unmapping a page: wait for it, then look again.
      changed_.wait(lock, [&] { return allocator_->pages_in_transition() == 0; });
      continue;
    }
    cold = true;
    map_for_locked(lock, n - allocator_->free_mapped_blocks(), n);
  }
  if (cold) {
    ++counters_.cold_allocs;
  }
  if (config_.background &&
      reserve_due_after_alloc(policy_config_, policy_, allocator_->free_pages(),
                              allocator_->unmapped_pages())) {
    changed_.notify_all();
  }
}

std::vector<BlockId> KvCache::alloc(size_t n) {
  std::vector<BlockId> out(n);
  alloc(n, out);
  return out;
}

void KvCache::free(std::span<const BlockId> ids) {
  std::unique_lock lock(mutex_);
  check_healthy_locked();
  for (const BlockId id : ids) {
    if (id == null_block()) {
      throw InvalidArgument("free: block 0 is the null block; nothing was freed");
    }
  }
  allocator_->free(ids);
  ++counters_.free_calls;
  policy_ = on_free_or_resize(policy_);
  // Unmap when too many pages sit idle, or when the limit was lowered below what is mapped
  // (pages that held blocks in use at resize() time go as soon as they empty).
  auto over = [&] { return unmap_due_after_free(policy_config_, page_counts_locked()); };
  if (over()) {
    if (config_.background) {
      changed_.notify_all();
    } else {
      while (over() && unmap_one_locked(lock)) {
      }
    }
  }
}

void KvCache::set_unmap_stream(uintptr_t stream) {
  unmap_stream_.store(stream);
  wait_for_stream_.store(true);
}

void KvCache::unmap_claimed(uint32_t page) {
  if (wait_for_stream_.load()) {
    store_->wait_for_stream(unmap_stream_.load());
  }
  store_->unmap_page(PageId{page});
}

bool KvCache::unmap_one_locked(std::unique_lock<std::mutex>& lock) {
  const std::optional<uint32_t> page = allocator_->claim_free_page();
  if (!page) {
    return false;
  }
  lock.unlock();
  try {
    unmap_claimed(*page);
  } catch (...) {
    lock.lock();
    allocator_->finish_unmapping(*page, false);
    changed_.notify_all();
    throw;
  }
  lock.lock();
  allocator_->finish_unmapping(*page, true);
  ++counters_.pages_unmapped_total;
  changed_.notify_all();
  return true;
}

void KvCache::ask_for_room(size_t blocks) noexcept {
  if (!config_.registry_link) {
    return;
  }
  uint64_t bytes = 0;
  if (blocks > 0) {
    std::lock_guard lock(mutex_);
    const size_t free = allocator_->free_mapped_blocks();
    const size_t per_page = allocator_->max_blocks_per_page();
    const size_t pages = blocks > free ? (blocks - free + per_page - 1) / per_page : 0;
    bytes = claim_bytes_locked(pages);
    if (bytes == 0) {
      return;  // what it needs is mapped, or charged as ready handles, already
    }
  }
  config_.registry_link->ask_for_room(bytes);
}

uint64_t KvCache::claim_bytes_locked(size_t pages) const {
  // What holding `pages` more than are mapped takes beyond the charge: ready handles (and the
  // handles of a mapping just rolled back, until the pool releases them) are charged already.
  // Measured from the charge alone, a claim would ask for those twice and outlive its need.
  return claim_bytes(allocator_->mapped_pages(), pages, store_->page_bytes(),
                     budget_->charged_bytes());
}

size_t KvCache::available() const {
  std::lock_guard lock(mutex_);
  return available_locked(true);
}

size_t KvCache::owed_blocks() const {
  // The mapper pays from free pages and ready handles first; only the rest needs blocks in use
  // freed (preemption). Pool before cache lock: the pool never calls into the cache.
  const uint64_t ready_bytes = store_->pool_stats().ready_bytes;
  std::lock_guard lock(mutex_);
  return kv::owed_blocks(policy_.owed_pages, allocator_->free_pages(), ready_bytes,
                         store_->page_bytes(), allocator_->max_blocks_per_page());
}

size_t KvCache::budget_pages_locked() const {
  // Ready pool handles are charged already, and handles on their way out, or being made by the
  // pool's thread, come back as headroom or as ready handles (the pool's acquire() waits for
  // them); the pool never calls into the cache.
  const pool::PagePoolStats pool = store_->pool_stats();
  const uint64_t ready = pool.ready_bytes + pool.releasing_bytes + pool.creating_bytes;
  const uint64_t headroom = budget_->headroom_bytes();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  return static_cast<size_t>((headroom > kMax - ready ? kMax : ready + headroom) /
                             store_->page_bytes());
}

size_t KvCache::available_locked(bool within_budget) const {
  // Blocks of unmapped pages (and of pages in transition), as far as the limit lets them map.
  const size_t mapped = allocator_->mapped_pages();
  const size_t limit = limit_pages_locked();
  // The budget may be shared (a device budget in the registry, or one LocalBudget for several
  // caches): what others hold is not ours to map. Ready pool handles are charged already.
  // Without others (within_budget false), the budget's whole limit is ours.
  size_t budget_pages = 0;
  if (within_budget) {
    budget_pages = budget_pages_locked();
  } else {
    const uint64_t ours =
        std::min<uint64_t>(budget_->limit_bytes() / store_->page_bytes(), store_->num_pages());
    budget_pages = ours > mapped ? static_cast<size_t>(ours - mapped) : 0;
  }
  const size_t headroom_pages = std::min(limit > mapped ? limit - mapped : 0, budget_pages);
  const size_t not_mapped_blocks =
      allocator_->usable_blocks() - allocator_->used_blocks() - allocator_->free_mapped_blocks();
  // Owing pages to others' claims, nothing counts as available: blocks freed meanwhile must
  // empty whole pages (best fit keeps the rest packed) for the mapper to unmap, so an engine
  // that admits by available() preempts until the debt is paid instead of refilling them.
  if (within_budget && policy_.owed_pages > 0) {
    return 0;
  }
  return allocator_->free_mapped_blocks() +
         std::min(not_mapped_blocks, headroom_pages * allocator_->max_blocks_per_page());
}

uint64_t KvCache::mapped_bytes() const {
  return static_cast<uint64_t>(store_->mapped_pages()) * store_->page_bytes();
}

void KvCache::resize(uint64_t limit_bytes) {
  std::unique_lock lock(mutex_);
  check_healthy_locked();
  config_.limit_bytes = limit_bytes;
  policy_ = on_free_or_resize(policy_);
  while (allocator_->mapped_pages() + allocator_->pages_in_transition() > limit_pages_locked()) {
    if (allocator_->pages_in_transition() > 0) {
      changed_.wait(lock, [&] { return allocator_->pages_in_transition() == 0; });
      continue;
    }
    if (!unmap_one_locked(lock)) {
      break;  // the rest holds blocks in use
    }
  }
  changed_.notify_all();
}

uint64_t KvCache::trim() {
  std::unique_lock lock(mutex_);
  check_healthy_locked();
  policy_ = on_trim(policy_);
  uint64_t pages = 0;
  for (;;) {
    // The mapper may be unmapping a page too: wait for it, so every free page is gone on return.
    changed_.wait(lock, [&] { return allocator_->pages_in_transition() == 0; });
    if (!unmap_one_locked(lock)) {
      break;
    }
    ++pages;
  }
  lock.unlock();
  store_->release_ready();
  return pages * store_->page_bytes();
}

bool KvCache::is_allocated(BlockId id) const {
  std::lock_guard lock(mutex_);
  return id != null_block() && allocator_->in_use(id);
}

KvCacheStats KvCache::stats() const {
  KvCacheStats s;
  {
    std::lock_guard lock(mutex_);
    s = counters_;
    s.num_blocks = config_.num_blocks;
    s.usable_blocks = allocator_->usable_blocks() - 1;
    s.blocks_in_use = blocks_handed_out(*allocator_);
    s.free_mapped_blocks = allocator_->free_mapped_blocks();
    s.num_pages = store_->num_pages();
    s.mapped_pages = static_cast<uint32_t>(allocator_->mapped_pages());
    s.free_pages = static_cast<uint32_t>(allocator_->free_pages());
    s.max_blocks_per_page = allocator_->max_blocks_per_page();
    s.page_bytes = store_->page_bytes();
    s.mapped_bytes = s.mapped_pages * s.page_bytes;
    s.peak_mapped_bytes = static_cast<uint64_t>(store_->peak_mapped_pages()) * s.page_bytes;
    s.in_use_bytes = (s.mapped_pages - s.free_pages) * s.page_bytes;
    const uint64_t limit = limit_bytes_locked();  // a registry limit too (kvpager limit)
    s.limit_bytes = limit == std::numeric_limits<uint64_t>::max() ? 0 : limit;
    s.virtual_bytes = store_->virtual_bytes();
    s.available_blocks = available_locked(true);
    s.available_within_limit_blocks = available_locked(false);
    s.owed_bytes = policy_.owed_pages * s.page_bytes;
  }
  if (config_.registry_link) {
    s.guarantee_bytes = config_.registry_link->guarantee_bytes();
  }
  s.pool = store_->pool_stats();
  return s;
}

LinkPoll KvCache::poll_link_locked() {
  limits::InstanceUsage usage;
  usage.used_bytes = static_cast<uint64_t>(allocator_->mapped_pages() - allocator_->free_pages()) *
                     store_->page_bytes();
  LinkPoll poll;
  poll.events = config_.registry_link->poll(usage);
  poll.charged_bytes = budget_->charged_bytes();
  return poll;
}

void KvCache::run_mapper() {
  using Clock = std::chrono::steady_clock;
  try {
    store_->prepare_background_thread();
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    broken_ = e.what();
    changed_.notify_all();
  }
  const auto interval =
      config_.registry_link ? config_.registry_link->poll_interval() : std::chrono::milliseconds(0);
  auto next_poll = Clock::now();
  const auto idle_release = policy_config_.idle_release;
  auto quiet_since = Clock::now();  // last time the mapper saw the alloc count move
  std::unique_lock lock(mutex_);
  uint64_t seen_allocs = counters_.alloc_calls;
  while (!stopping_) {
    if (!broken_.empty()) {
      changed_.wait(lock, [&] { return stopping_; });
      break;
    }
    // Gather what the policy decides from (memory_policy.hpp), then carry out its step.
    MapperInputs in;
    const auto now = Clock::now();
    in.allocs_moved = counters_.alloc_calls != seen_allocs;
    if (in.allocs_moved) {
      seen_allocs = counters_.alloc_calls;
      quiet_since = now;
    }
    in.quiet_for = now - quiet_since;
    if (config_.registry_link && Clock::now() >= next_poll) {
      next_poll = Clock::now() + interval;
      in.poll = poll_link_locked();
    }
    in.pages = page_counts_locked();
    in.page_bytes = store_->page_bytes();
    in.excess_bytes = budget_->excess_bytes();
    in.ready_bytes = in.excess_bytes > 0 ? store_->pool_stats().ready_bytes : 0;
    const MapperStep step = decide_mapper_step(policy_config_, policy_, in);
    policy_ = step.state;
    const auto idle_deadline = idle_release.count() > 0 && !policy_.idle_released
                                   ? quiet_since + idle_release
                                   : Clock::time_point::max();
    try {
      switch (step.action) {
        case MapperAction::kUnmapPage:
          if (unmap_one_locked(lock) && step.pays_debt) {
            policy_ = on_debt_page_paid(policy_);
            ++counters_.pages_given_back_total;
          }
          break;
        case MapperAction::kReleaseReady:
          // Outside our lock; the pool never calls back into the cache.
          lock.unlock();
          store_->release_ready();
          lock.lock();
          break;
        case MapperAction::kMapReserve:
          try {
            map_for_locked(lock, 1, 0);
          } catch (const OutOfMemory&) {
            policy_ = on_reserve_refused(policy_);  // budget or device full: retry after a free
          } catch (const Timeout&) {
            policy_ = on_reserve_refused(policy_);  // the registry's lock held too long: likewise
          }
          break;
        case MapperAction::kWait:
          if (config_.registry_link) {
            changed_.wait_until(lock, std::min(next_poll, idle_deadline));
          } else if (idle_deadline != Clock::time_point::max()) {
            changed_.wait_until(lock, idle_deadline);
          } else {
            changed_.wait(lock);
          }
          break;
      }
    } catch (const std::exception& e) {
      if (!lock.owns_lock()) {
        lock.lock();
      }
      if (broken_.empty()) {
        broken_ = e.what();
      }
      changed_.notify_all();
    }
  }
}

}  // namespace kvpager::kv

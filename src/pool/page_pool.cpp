#include "kvpager/pool/page_pool.hpp"

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"

namespace kvpager::pool {

PagePool::PagePool(std::shared_ptr<vmm::Backend> backend,
                   std::shared_ptr<limits::MemoryBudget> budget, PagePoolConfig config)
    : backend_(std::move(backend)), budget_(std::move(budget)), config_(config) {
  if (!budget_) budget_ = std::make_shared<limits::LocalBudget>();
  const size_t g = backend_->granularity();
  if (config_.handle_bytes == 0 || config_.handle_bytes % g != 0) {
    throw InvalidArgument("page pool: handle size " + format_size(config_.handle_bytes) +
                          " must be a positive multiple of the backend granularity " +
                          format_size(g));
  }
  if (config_.min_ready > config_.max_ready) {
    throw InvalidArgument("page pool: min_ready must not exceed max_ready");
  }
  ready_.reserve(config_.max_ready + 64);
  if (config_.background) thread_ = std::thread([this] { run(); });
}

PagePool::~PagePool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto h : ready_) {
    try {
      release_uncharged(h);
    } catch (...) {  // never throw from a destructor; the process is giving the memory up
    }
  }
}

vmm::PhysicalHandle PagePool::create_charged() {
  if (!budget_->try_charge(config_.handle_bytes)) return {};
  try {
    return backend_->create(config_.handle_bytes);
  } catch (...) {
    budget_->uncharge(config_.handle_bytes);
    throw;
  }
}

void PagePool::release_uncharged(vmm::PhysicalHandle handle) {
  backend_->release(handle);
  budget_->uncharge(handle.bytes);
}

void PagePool::release_taken(std::span<const vmm::PhysicalHandle> handles) {
  size_t done = 0;
  try {
    for (; done < handles.size(); ++done) release_uncharged(handles[done]);
  } catch (...) {
    std::lock_guard lock(mutex_);
    releasing_ -= handles.size();  // the rest stay with the failed driver call
    settled_.notify_all();
    throw;
  }
  std::lock_guard lock(mutex_);
  releasing_ -= handles.size();
  // Their charge is gone, so a refill refused while it was still there may go again (else the
  // thread, refused while releasing a surplus, would make none until the next give_back).
  refill_blocked_ = false;
  settled_.notify_all();
}

void PagePool::acquire(std::span<vmm::PhysicalHandle> out) {
  size_t from_ready = 0;
  {
    std::lock_guard lock(mutex_);
    if (!background_error_.empty()) {
      throw StateError("page pool background thread failed earlier: " + background_error_);
    }
    refill_suspended_ = false;
    from_ready = std::min(out.size(), ready_.size());
    for (size_t i = 0; i < from_ready; ++i) {
      out[i] = ready_.back();
      ready_.pop_back();
    }
    stats_.on_loan += from_ready;
    stats_.acquired_ready += from_ready;
  }
  size_t created = 0;     // out[from_ready, from_ready + created): made here or taken late
  size_t late_ready = 0;  // of those, ready handles the thread made during this acquire()
  try {
    for (size_t i = from_ready; i < out.size(); ++i) {
      vmm::PhysicalHandle h = create_charged();
      if (!h.valid()) h = acquire_after_refusal(late_ready);
      if (!h.valid()) {
        throw OutOfMemory("page pool: memory budget of " + format_size(budget_->limit_bytes()) +
                          " reached (" + format_size(budget_->charged_bytes()) +
                          " charged); free or trim blocks, or raise the limit");
      }
      out[i] = h;
      ++created;
    }
  } catch (...) {
    // All or nothing: give the ready ones back, release the ones made (or taken late) here.
    for (size_t i = from_ready; i < from_ready + created; ++i) release_uncharged(out[i]);
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < from_ready; ++i) ready_.push_back(out[i]);
    stats_.on_loan -= from_ready;
    stats_.acquired_ready -= from_ready;
    stats_.released += late_ready;
    throw;
  }
  {
    std::lock_guard lock(mutex_);
    stats_.on_loan += created;
    stats_.created += created - late_ready;
    stats_.acquired_cold += created - late_ready;
    stats_.acquired_ready += late_ready;
  }
  if (config_.background) wake_.notify_one();
}

vmm::PhysicalHandle PagePool::acquire_after_refusal(size_t& late_ready) {
  // Surplus handles on their way out are still charged, and so is a handle the thread is
  // making: wait until none is in flight (also when the last one finished between the refusal
  // and this check), then take the one made meanwhile, or retry the budget once.
  {
    std::unique_lock lock(mutex_);
    settled_.wait(lock, [&] { return releasing_ == 0 && creating_ == 0; });
    if (!ready_.empty()) {
      vmm::PhysicalHandle h = ready_.back();
      ready_.pop_back();
      ++late_ready;
      return h;
    }
  }
  return create_charged();
}

void PagePool::give_back(std::span<const vmm::PhysicalHandle> handles) {
  {
    std::lock_guard lock(mutex_);
    for (auto h : handles) ready_.push_back(h);
    stats_.on_loan -= handles.size();
    refill_blocked_ = false;
  }
  if (config_.background) {
    wake_.notify_one();
    return;
  }
  // No thread: release the surplus inline.
  std::vector<vmm::PhysicalHandle> surplus;
  {
    std::lock_guard lock(mutex_);
    uint64_t excess = budget_->excess_bytes();
    while (ready_.size() > config_.max_ready || (!ready_.empty() && excess > 0)) {
      excess -= std::min<uint64_t>(excess, ready_.back().bytes);
      surplus.push_back(ready_.back());
      ready_.pop_back();
      stats_.released++;
    }
    releasing_ += surplus.size();
  }
  release_taken(surplus);
}

void PagePool::trim() {
  std::vector<vmm::PhysicalHandle> all;
  {
    std::lock_guard lock(mutex_);
    all.swap(ready_);
    ready_.reserve(config_.max_ready + 64);
    stats_.released += all.size();
    releasing_ += all.size();
    refill_suspended_ = true;
  }
  release_taken(all);
}

void PagePool::set_watermarks(size_t min_ready, size_t max_ready) {
  if (min_ready > max_ready)
    throw InvalidArgument("page pool: min_ready must not exceed max_ready");
  {
    std::lock_guard lock(mutex_);
    config_.min_ready = min_ready;
    config_.max_ready = max_ready;
    refill_blocked_ = false;
  }
  wake_.notify_one();
}

PagePoolStats PagePool::stats() const {
  std::lock_guard lock(mutex_);
  PagePoolStats s = stats_;
  s.ready = ready_.size();
  s.ready_bytes = static_cast<uint64_t>(ready_.size()) * config_.handle_bytes;
  s.releasing_bytes = static_cast<uint64_t>(releasing_) * config_.handle_bytes;
  s.creating_bytes = static_cast<uint64_t>(creating_) * config_.handle_bytes;
  return s;
}

void PagePool::refill_one() {
  // A ready handle is made ahead of demand: without headroom it is not tried, so that refill
  // never meets a refusal, which a shared budget answers by pressing the other members to shed
  // (a member taking the room meanwhile can still refuse it).
  {
    std::lock_guard g(mutex_);
    ++creating_;
  }
  vmm::PhysicalHandle h;
  try {
    if (budget_->headroom_bytes() >= config_.handle_bytes) h = create_charged();
  } catch (...) {
    std::lock_guard g(mutex_);
    --creating_;
    settled_.notify_all();
    throw;
  }
  std::lock_guard g(mutex_);
  --creating_;
  if (h.valid()) {
    ready_.push_back(h);
    stats_.created++;
  } else {
    refill_blocked_ = true;  // budget full: wait for a give_back or new watermarks
  }
  settled_.notify_all();
}

void PagePool::run() {
  try {
    backend_->prepare_background_thread();
  } catch (const std::exception& e) {
    std::lock_guard g(mutex_);
    background_error_ = e.what();
  }
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // Above its budget's limit (lowered under the charge) the pool keeps no ready handle: they
    // are charged memory nobody uses.
    const bool excess = !ready_.empty() && budget_->excess_bytes() > 0;
    const bool want_more = !refill_suspended_ && !refill_blocked_ && background_error_.empty() &&
                           ready_.size() < config_.min_ready && budget_->excess_bytes() == 0;
    const bool too_many = ready_.size() > config_.max_ready || excess;
    if (!want_more && !too_many) {
      wake_.wait(lock);
      continue;
    }
    lock.unlock();
    try {
      if (too_many) {
        vmm::PhysicalHandle victim;
        {
          std::lock_guard g(mutex_);
          if (ready_.size() > config_.max_ready ||
              (!ready_.empty() && budget_->excess_bytes() > 0)) {
            victim = ready_.back();
            ready_.pop_back();
            stats_.released++;
            ++releasing_;
          }
        }
        if (victim.valid()) release_taken({&victim, 1});
      } else {
        refill_one();
      }
    } catch (const OutOfMemory&) {
      std::lock_guard g(mutex_);
      refill_blocked_ = true;  // device full: not an error, try again after a give_back
    } catch (const Timeout&) {
      std::lock_guard g(mutex_);
      refill_blocked_ = true;  // the budget's lock is held too long (its holder is stopped)
    } catch (const std::exception& e) {
      std::lock_guard g(mutex_);
      if (background_error_.empty()) background_error_ = e.what();
    }
    lock.lock();
  }
}

}  // namespace kvpager::pool

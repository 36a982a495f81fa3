#pragma once
// PagePool: physical handles created ahead of demand, so mapping a page never waits for
// cuMemCreate (12 us and up per handle on an H100/H200).
//
// A background thread keeps between `min_ready` and `max_ready` handles ready: it creates
// handles while fewer than min_ready are ready (and the budget's headroom allows: a refill
// is never what a shared budget refuses and answers with pressure), and releases handles
// while more than max_ready are ready. Every created handle is charged to the MemoryBudget, so
// the pool never holds more than the budget allows (ready + on loan). While the budget reports
// an excess (its limit lowered below the charge) the thread keeps no ready handle: it releases
// them, also those given back later, and creates none.
//
// Thread safety: all public methods are thread-safe.
// Errors: acquire() throws OutOfMemory when the budget or the device refuses and nothing was
// taken (a refusal while surplus handles are being released, or while the thread is making a
// ready handle, waits for them first: a handle on its way out, or charged and not yet ready,
// never makes acquire() fail), and passes on a budget's Timeout (a shared
// budget whose lock stays held); the thread treats both as "retry after a give_back or a release".
// A driver error in the background thread is recorded and raised by the next acquire(). Ownership:
// handles given out by acquire() belong to the caller until give_back(); the pool releases only its
// ready handles (at trim(), when over max_ready, and in its destructor).
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::pool {

struct PagePoolConfig {
  size_t handle_bytes = 2u << 20;  // multiple of the backend granularity
  size_t min_ready = 4;            // KVPAGER_POOL_MIN_READY
  size_t max_ready = 32;           // KVPAGER_POOL_MAX_READY
  bool background = true;          // false: no thread; refill only inside acquire()
};

struct PagePoolStats {
  size_t ready = 0;             // handles created and waiting
  size_t on_loan = 0;           // handles given out by acquire() and not given back
  uint64_t created = 0;         // handles created since construction
  uint64_t released = 0;        // handles released since construction
  uint64_t acquired_ready = 0;  // handles acquire() took from the ready list
  uint64_t acquired_cold = 0;   // handles acquire() had to create itself
  uint64_t ready_bytes = 0;
  uint64_t releasing_bytes = 0;  // surplus handles on their way out, charged until released
  uint64_t creating_bytes = 0;   // handles the thread is making: charged, ready soon
};

class PagePool {
 public:
  PagePool(std::shared_ptr<vmm::Backend> backend, std::shared_ptr<limits::MemoryBudget> budget,
           PagePoolConfig config);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // Fills `out` with out.size() handles, all or nothing. Ready handles first, then new ones.
  void acquire(std::span<vmm::PhysicalHandle> out);
  // Returns handles to the ready list; surplus above max_ready is released by the thread.
  void give_back(std::span<const vmm::PhysicalHandle> handles);
  // Releases every ready handle now and stops refilling until the next acquire().
  void trim();
  // Changes the watermarks; the thread converges to them.
  void set_watermarks(size_t min_ready, size_t max_ready);

  PagePoolStats stats() const;
  size_t handle_bytes() const { return config_.handle_bytes; }
  vmm::Backend& backend() { return *backend_; }
  limits::MemoryBudget& budget() { return *budget_; }

 private:
  void run();
  // Creates one handle charged to the budget; nullopt-like invalid handle when refused.
  vmm::PhysicalHandle create_charged();
  void release_uncharged(vmm::PhysicalHandle handle);
  // Releases ready handles already taken off the list (counted in releasing_), unblocks the
  // refill (room was made), then wakes an acquire() that waits for their charge to go.
  void release_taken(std::span<const vmm::PhysicalHandle> handles);
  // The thread's refill: one handle made ahead of demand (counted in creating_ while charged
  // and not yet ready).
  void refill_one();
  // After a refusal: waits until no handle is in flight (releasing_ or creating_), then takes a
  // ready one (made meanwhile) or tries the budget once more. Invalid when still refused.
  vmm::PhysicalHandle acquire_after_refusal(size_t& late_ready);

  std::shared_ptr<vmm::Backend> backend_;
  std::shared_ptr<limits::MemoryBudget> budget_;
  PagePoolConfig config_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable settled_;  // releasing_ or creating_ went down
  std::vector<vmm::PhysicalHandle> ready_;
  // Ready handles taken off the list and being released: no longer ready, still charged. An
  // acquire() the budget refuses waits for them before it gives up.
  size_t releasing_ = 0;
  // Handles the thread is making: charged, not yet ready. A refused acquire() waits for them
  // too, and takes one once it is ready.
  size_t creating_ = 0;
  PagePoolStats stats_;
  bool refill_suspended_ = false;  // after trim() until the next acquire()
  bool refill_blocked_ = false;    // the budget or device refused; retried after a release
  bool stopping_ = false;
  std::string background_error_;  // first driver error seen by the thread
  std::thread thread_;
};

}  // namespace kvpager::pool

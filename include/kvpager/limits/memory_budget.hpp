#pragma once
// MemoryBudget: how many bytes of physical memory an owner may hold. The page pool charges a
// budget for every physical handle it creates and uncharges it when the handle is released, so
// the budget bounds mapped plus ready (mapped-ahead) memory.
//
// LocalBudget is the in-process implementation. The shared-memory registry (limits layer,
// several processes on one device) implements the same interface.
// Thread safety: all methods are thread-safe and lock-free.
#include <atomic>
#include <cstdint>
#include <limits>

namespace kvpager::limits {

class MemoryBudget {
 public:
  virtual ~MemoryBudget() = default;
  // Adds `bytes` to the charge if it stays within the limit; returns false (and changes
  // nothing) otherwise.
  [[nodiscard]] virtual bool try_charge(uint64_t bytes) = 0;
  virtual void uncharge(uint64_t bytes) = 0;
  virtual uint64_t limit_bytes() const = 0;
  virtual uint64_t charged_bytes() const = 0;
  // Bytes try_charge() could add now (a snapshot: other owners may take or return some at any
  // moment). A budget shared with others counts their charges too.
  virtual uint64_t headroom_bytes() const {
    const uint64_t limit = limit_bytes(), charged = charged_bytes();
    return limit > charged ? limit - charged : 0;
  }
  // What the owner holds beyond what it may hold now: a limit or budget lowered below its
  // charge. The owner gives back what of it it does not use (ready handles, free pages) and
  // grows no reserve meanwhile. A snapshot, lock-free.
  virtual uint64_t excess_bytes() const {
    const uint64_t limit = limit_bytes(), charged = charged_bytes();
    return charged > limit ? charged - limit : 0;
  }
};

class LocalBudget final : public MemoryBudget {
 public:
  explicit LocalBudget(uint64_t limit = std::numeric_limits<uint64_t>::max()) : limit_(limit) {}

  [[nodiscard]] bool try_charge(uint64_t bytes) override;
  void uncharge(uint64_t bytes) override;
  uint64_t limit_bytes() const override { return limit_.load(std::memory_order_relaxed); }
  uint64_t charged_bytes() const override { return charged_.load(std::memory_order_relaxed); }
  // Lowering the limit below the charge refuses new charges until enough is uncharged.
  void set_limit(uint64_t limit) { limit_.store(limit, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> limit_;
  std::atomic<uint64_t> charged_{0};
};

}  // namespace kvpager::limits

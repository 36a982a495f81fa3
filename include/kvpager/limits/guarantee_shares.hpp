#pragma once
// Guarantee shares: what a device's budget, guarantees and claims ask of one member, as pure
// functions of numbers. DeviceBudget and InstanceRegistration read the numbers from the
// segment (lock-free snapshots) and report the results through MemoryBudget and InstanceLink;
// kv/memory_policy.hpp is the side that acts on them.
// Thread safety: pure functions. Never throw, never allocate.
#include <cstdint>

namespace kvpager::limits {

// The device as one member sees it: its budget and the sum of every member's charge.
struct DeviceTotals {
  uint64_t budget_bytes = 0;
  uint64_t charged_bytes = 0;
  uint64_t free_bytes() const {
    return budget_bytes > charged_bytes ? budget_bytes - charged_bytes : 0;
  }
};

// What a member borrowing `borrowed` (its charge above its guarantee) owes to claims that lack
// `shortfall` beyond the free budget: its share by what it borrows of `borrowed_total` (every
// member's charge above its guarantee, its own included), rounded up, at most `borrowed`.
uint64_t owed_share(uint64_t borrowed, uint64_t shortfall, uint64_t borrowed_total) noexcept;

// What a member holds beyond what it may hold now: its charge above its instance limit, or, while
// the device's charges sum above the budget, its charge above its guarantee (at most the
// overshoot); the larger of the two.
uint64_t excess_of(uint64_t charged, uint64_t instance_limit, uint64_t guarantee,
                   const DeviceTotals& device) noexcept;

// What a member may charge now: within its instance limit and the free budget less what the
// other members' live claims keep.
uint64_t headroom_of(uint64_t charged, uint64_t instance_limit, uint64_t claimed_by_others,
                     const DeviceTotals& device) noexcept;

}  // namespace kvpager::limits

#pragma once
// MemoryPolicy: the kv side of the memory protocol (limits, device pressure, guarantees, debts),
// as pure functions of numbers. KvCache gathers the inputs under its lock, calls these, and
// carries out what they return; nothing here touches memory, the budget, the link or a clock.
//
// The background mapper takes one step at a time: decide_mapper_step() gets what the mapper saw
// (page counts, the budget's excess, the link's events when it polled, how long no alloc came)
// and the state the policy keeps between steps, and returns the next state and one action:
// unmap one free page, release the pool's ready handles, map one reserve page, or wait. In that
// order of precedence:
// - unmap while free pages are above max_idle_pages, pages above the limit, the instance sheds
//   for pressure (down to its guarantee), owes pages to others' claims, or holds more than the
//   budget allows (excess beyond its ready handles, down to its guarantee);
// - release ready handles once a changed limit, a shed, a debt, an excess or idleness asked so
//   (after the pages above are unmapped: ready handles are charged too);
// - map a reserve page while fewer than reserve_pages are free, under the limit, with nothing
//   owed, no excess, and the reserve neither suspended (trim, pressure; until the next alloc)
//   nor blocked (refused by the budget; until a free, a resize or a changed limit).
// Thread safety: pure functions, no state of their own. Hot path: nothing allocates or throws.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "kvpager/limits/instance_link.hpp"

namespace kvpager::kv {

struct MemoryPolicyConfig {
  size_t reserve_pages = 1;   // free pages kept mapped ahead (KvCacheConfig::reserve_pages)
  size_t max_idle_pages = 4;  // free pages beyond this are unmapped
  // No alloc for this long: release the ready handles once (until the next alloc). 0: never.
  std::chrono::milliseconds idle_release{1000};
};

// What the policy remembers between mapper steps (KvCache keeps it under its lock; its public
// calls change it through the on_* functions below).
struct MemoryPolicyState {
  bool reserve_suspended = false;  // trim() or pressure: no reserve until the next alloc
  bool reserve_blocked = false;    // the budget refused the reserve: retried after a free
  bool shedding = false;           // device pressure: unmap free pages down to keep_pages
  bool release_pending = false;    // release the pool's ready handles at the next chance
  bool idle_released = false;      // ready handles released for idleness, until an alloc
  size_t keep_pages = 0;           // the registry guarantee, in pages (shedding stops there)
  size_t owed_pages = 0;           // others' claims: free pages to unmap, nothing available
  bool operator==(const MemoryPolicyState&) const = default;
};

// Pages of the cache's KV space (logical pages: all handles of one page).
struct PageCounts {
  size_t mapped = 0;         // mapped, the null block's page included
  size_t free = 0;           // mapped with no block in use
  size_t unmapped = 0;       // neither mapped nor in transition
  size_t in_transition = 0;  // being mapped or unmapped right now
  size_t limit = 0;          // the limit in force (own or the link's, the smaller), in pages
  bool operator==(const PageCounts&) const = default;
};

// A registry poll: the link's events and the budget's charge read with them.
struct LinkPoll {
  limits::LinkEvents events;
  uint64_t charged_bytes = 0;  // MemoryBudget::charged_bytes(), ready handles included
};

struct MapperInputs {
  PageCounts pages;
  uint64_t page_bytes = 0;
  std::optional<LinkPoll> poll = std::nullopt;  // set when the mapper polled its link this step
  uint64_t excess_bytes = 0;                    // MemoryBudget::excess_bytes()
  uint64_t ready_bytes = 0;   // the pool's ready handles; only read while excess_bytes > 0
  bool allocs_moved = false;  // an alloc came since the previous step
  std::chrono::nanoseconds quiet_for{0};  // since the last alloc the mapper saw
};

enum class MapperAction {
  kUnmapPage,     // unmap one free page (pays one owed page when `pays_debt`)
  kReleaseReady,  // release the pool's ready handles
  kMapReserve,    // map one page ahead; on OutOfMemory or Timeout: on_reserve_refused()
  kWait,          // nothing to do until woken, the next poll or the idle deadline
};

struct MapperStep {
  MemoryPolicyState state;  // the state after this step (before its action is carried out)
  MapperAction action = MapperAction::kWait;
  bool pays_debt = false;  // a successful unmap lowers state.owed_pages by one
};

// The mapper's next step. Pure.
MapperStep decide_mapper_step(const MemoryPolicyConfig& config, MemoryPolicyState state,
                              const MapperInputs& in) noexcept;

// Whether free() must unmap (inline) or wake the mapper: too many idle pages, or pages above a
// limit lowered while they held blocks in use.
bool unmap_due_after_free(const MemoryPolicyConfig& config, const PageCounts& pages) noexcept;
// Whether alloc() must wake the mapper to refill the reserve (the mapper checks the rest). Takes
// the two counts alone: alloc() is a hot path.
bool reserve_due_after_alloc(const MemoryPolicyConfig& config, const MemoryPolicyState& state,
                             size_t free_pages, size_t unmapped_pages) noexcept;

// State changes from the cache's public calls.
MemoryPolicyState on_alloc(MemoryPolicyState s) noexcept;  // reserve and shedding resume
// free() or resize(): room may have come back, a refused reserve is retried.
MemoryPolicyState on_free_or_resize(MemoryPolicyState s) noexcept;
MemoryPolicyState on_trim(MemoryPolicyState s) noexcept;  // no reserve until the next alloc
MemoryPolicyState on_reserve_refused(MemoryPolicyState s) noexcept;
MemoryPolicyState on_debt_page_paid(MemoryPolicyState s) noexcept;

// What holding `more_pages` beyond the mapped ones claims from others: the bytes beyond the
// budget's charge (ready handles, and handles of a mapping just rolled back, are charged
// already; measured from the charge alone, a claim would ask for those twice).
uint64_t claim_bytes(size_t mapped_pages, size_t more_pages, uint64_t page_bytes,
                     uint64_t charged_bytes) noexcept;
// Blocks an engine should free (preempt) to pay what is owed at once: the owed pages beyond
// what free pages and ready handles pay, in blocks.
size_t owed_blocks(size_t owed_pages, size_t free_pages, uint64_t ready_bytes, uint64_t page_bytes,
                   size_t blocks_per_page) noexcept;

}  // namespace kvpager::kv

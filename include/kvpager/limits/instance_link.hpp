#pragma once
// InstanceLink: what a KvCache needs from its entry in a registry that other processes
// control — the limit they set, a place to publish its usage, and word of memory pressure on
// the device — without knowing how the registry is kept.
//
// The owner (KvCache's background thread) calls poll() every poll_interval(): it publishes
// usage and a heartbeat and learns what changed since the previous poll. On `limit_changed`
// the owner unmaps free pages above instance_limit_bytes() and releases ready handles; on
// `shed` (another instance was refused by the device budget) it gives back its free pages down
// to its guarantee (every free page when it has none); while `owed_bytes` is above zero
// (others claim their guarantees) it unmaps free pages worth that much and does not count them
// as available. Whatever the events, while the budget's excess_bytes() is above zero (a limit or
// device budget lowered below what the instance holds) it releases ready handles and unmaps
// free pages down to its guarantee at every poll, so later frees are given back too.
// Thread safety: instance_limit_bytes() and budget() may be called from any thread (lock-free,
// no syscall); poll() from one thread at a time. poll() never throws.
#include <chrono>
#include <cstdint>
#include <memory>

#include "kvpager/limits/memory_budget.hpp"

namespace kvpager::limits {

struct InstanceUsage {
  uint64_t used_bytes = 0;  // bytes of pages holding at least one block in use
};

struct LinkEvents {
  bool limit_changed = false;  // the instance limit or the device budget changed
  bool shed = false;           // another instance needs memory: give back what is free
  uint64_t keep_bytes = 0;     // shedding stops with this much mapped (the guarantee)
  uint64_t owed_bytes = 0;     // to give back now for others' claims on their guarantees
};

class InstanceLink {
 public:
  virtual ~InstanceLink() = default;
  // The budget the owner's page pool must charge (the registry's accounting).
  virtual std::shared_ptr<MemoryBudget> budget() = 0;
  // The limit set for this instance; UINT64_MAX when none (the device budget still bounds it).
  virtual uint64_t instance_limit_bytes() const = 0;
  // The share guaranteed to this instance on its device (0: none). Lock-free.
  virtual uint64_t guarantee_bytes() const { return 0; }
  virtual std::chrono::milliseconds poll_interval() const = 0;
  virtual LinkEvents poll(const InstanceUsage& usage) noexcept = 0;
  // The owner waits for `bytes` more memory that others hold (0: as much as its guarantee; it
  // would be refused, so it does not try): tells the other instances on the device to give
  // back what they hold free (their `shed`), as a refused charge does, claims that much of its
  // guarantee if it holds less, and reclaims dead members' charges. Any thread; never throws.
  virtual void ask_for_room(uint64_t bytes) noexcept = 0;
};

}  // namespace kvpager::limits

#pragma once
// DeviceBudget: one process's handle on a device's registry segment (segment_format.hpp): the
// budget that bounds the sum of all member instances' charges, and the slot table holding
// those charges.
//
// Charging is atomic across processes: try_charge() runs under the segment's robust
// process-shared mutex, so the sum of the slots never exceeds the budget at any instant (as
// observed under the same lock, e.g. by snapshot_locked()). A holder killed inside the lock
// does not wedge anyone: the next locker recovers it (robust_mutex.hpp). One that is stopped
// (SIGSTOP, a debugger) or hung, or a garbage lock word, holds the others back at most the
// config's lock_timeout: every locked method then throws Timeout naming the holder and how
// long it has held the lock. Uncharging is a
// lock-free decrement (it can only move the sum away from the bound).
// Slots of dead processes keep their charge until reclaimed: try_charge() reclaims them when
// the budget refuses, and `kvpager gc` does so explicitly.
//
// Guarantees: a member may hold a guaranteed share (the guarantees sum to at most the budget).
// Memory is elastic: a member may charge beyond its guarantee while the others do not need
// theirs. A member below its guarantee that is refused (or asks for room) *claims* what it
// waits for, up to its guarantee: while the claim lives, the others may not charge into it,
// and each member above its own guarantee owes memory back (owed_by(): its background thread
// unmaps free pages, its engine admits less or preempts until the claim is met). A claim is
// sized by the need (a refused charge, or what the member asks for), not the whole unmet
// guarantee: a model that needs one more request's pages takes no more from the borrowers.
// A claim lives `claim_ttl` past the member's last refusal or request, and stops holding
// others back after `claim_patience` without the member getting any memory (a borrower whose
// running requests need that memory can then finish them).
// Guarantee 0 everywhere is plain first-come, first-served sharing of the budget.
// Lock order: the device mutex is a leaf; nothing else is locked while it is held.
// Thread safety: all methods are thread-safe. Errors: Timeout when the lock stays held past
// lock_timeout (nothing changed), StateError for a corrupt segment or a slot taken away,
// DriverError for system calls, InvalidArgument for bad names.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kvpager/limits/process_identity.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/limits/robust_mutex.hpp"
#include "kvpager/limits/segment_decoder.hpp"
#include "kvpager/limits/segment_format.hpp"
#include "kvpager/limits/shm_file.hpp"

namespace kvpager::limits {

enum class ChargeResult { kCharged, kInstanceLimit, kDeviceBudget };

class DeviceBudget {
 public:
  // Opens the device's segment, creating it when absent with a budget of
  // config.gpu_utilization applied to `total_bytes`.
  static DeviceBudget open_or_create(const RegistryConfig& config, const std::string& device,
                                     uint64_t total_bytes);
  // Opens an existing segment; InvalidArgument when there is none ("unknown device"),
  // StateError when it fails validation.
  static DeviceBudget open_existing(const RegistryConfig& config, const std::string& device);

  const std::string& device() const { return device_; }
  const std::string& path() const { return file_.path(); }
  uint64_t total_bytes() const { return segment().total_bytes; }
  uint64_t budget_bytes() const { return segment().budget_bytes.load(std::memory_order_acquire); }
  uint64_t budget_revision() const {
    return segment().budget_revision.load(std::memory_order_acquire);
  }
  uint64_t pressure() const { return segment().pressure.load(std::memory_order_acquire); }
  uint64_t charged_of(uint32_t slot) const;
  uint64_t guarantee_of(uint32_t slot) const;
  // Sum of the taken slots' charges, read without the lock (each slot is read atomically; a
  // charge that moves during the scan may be seen before or after).
  uint64_t charged_total() const;
  // Bumps the pressure counter (members shed free memory when they see it move); returns the
  // new value. Lock-free.
  uint64_t raise_pressure() noexcept;

  // Takes a free slot for `name` owned by `who`, with `guarantee_bytes` guaranteed. A slot of
  // the same name whose owner is dead is reclaimed first; one whose owner lives makes this throw
  // StateError. InvalidArgument when the guarantees would sum above the budget.
  uint32_t join(const std::string& name, const ProcessIdentity& who, uint64_t guarantee_bytes = 0);
  // Changes the slot's guarantee; InvalidArgument when the guarantees would sum above the
  // budget, StateError when `who` no longer owns the slot.
  void set_guarantee(uint32_t slot, const ProcessIdentity& who, uint64_t bytes);
  // Starts or renews the slot's claim if `who` owns it and it holds less than its guarantee;
  // returns whether it claims. The claim asks for `bytes` more than the slot holds now (0: its
  // whole guarantee), at most up to the guarantee; renewing a live claim can raise what it asks,
  // never lower it. A claim whose patience ran out starts over after another patience.
  // Lock-free, never throws.
  bool claim(uint32_t slot, const ProcessIdentity& who, uint64_t bytes = 0) noexcept;
  // What the other members' live claims keep from `slot`: for each, what it still lacks of
  // what it claimed. Lock-free snapshot.
  uint64_t claimed_by_others(uint32_t slot) const;
  // What `slot` should give back for the live claims: its share (by what it borrows) of what
  // the claims lack beyond the free budget, at most its charge above its guarantee
  // (guarantee_shares.hpp's owed_share). Lock-free snapshot.
  uint64_t owed_by(uint32_t slot) const;
  // Frees the slot if `who` still owns it (its charge goes with it). Never throws.
  void leave(uint32_t slot, const ProcessIdentity& who) noexcept;

  // Adds `bytes` to the slot's charge if the slot stays within `instance_limit` and the
  // device sum, plus what the other members' live claims keep, within the budget. When the
  // budget refuses, dead members are reclaimed and the check repeated; a final refusal claims
  // (below the guarantee) and bumps the pressure counter, after incrementing `*own_raises`
  // (the caller's count of the raises it made, when given).
  [[nodiscard]] ChargeResult try_charge(uint32_t slot, const ProcessIdentity& who, uint64_t bytes,
                                        uint64_t instance_limit,
                                        std::atomic<uint64_t>* own_raises = nullptr);
  // Removes up to `bytes` from the slot's charge (never below zero). Lock-free, never throws.
  uint64_t uncharge(uint32_t slot, uint64_t bytes) noexcept;

  // Frees the slots of dead owners; returns the bytes of charge reclaimed.
  uint64_t reclaim_dead(std::vector<DeviceSlotRecord>* reclaimed = nullptr);
  // Frees the slot held by (name, who) if any; returns its charge. For `kvpager delete`.
  uint64_t release_member(const std::string& name, const ProcessIdentity& who);

  // InvalidArgument for 0 or a budget below the sum of the guarantees.
  void set_budget(uint64_t bytes);
  // Pools an engine's share of the device into the budget, for engines that size their KV
  // memory from their own share of the device (vLLM's --gpu-memory-utilization): when `slot`
  // is the device's only live member, or the budget is still `default_bytes` (the one the
  // segment was created with: no share pooled yet, so engines starting together agree), the
  // budget becomes `share`; otherwise it grows by `share`. Returns the new budget.
  // InvalidArgument for a share of 0; StateError when `who` does not own `slot`.
  uint64_t pool_share(uint32_t slot, const ProcessIdentity& who, uint64_t share,
                      uint64_t default_bytes);
  // Takes a share pool_share() added out again when the engine in `slot` leaves: its guarantee
  // (a part of that share) goes with it, under the same lock, and the budget stays at least the
  // sum of the others' guarantees and one byte. Returns the new budget. Never throws (a lock
  // that cannot be taken, or a slot `who` no longer owns, leaves the budget as it is).
  uint64_t unpool_share(uint32_t slot, const ProcessIdentity& who, uint64_t share) noexcept;
  // The segment decoded under the lock: a consistent view of every charge.
  DeviceRecord snapshot_locked();
  // Takes the segment's lock, as every locked method here does, for tools and tests that must
  // hold it themselves: Timeout after the config's lock_timeout, naming the holder. `self` is
  // the pid recorded as holder (0: getpid(); charges pass their own and make no syscall).
  RobustLock lock(pid_t self = 0);
  // The segment's mutex itself, for tests that corrupt it.
  pthread_mutex_t* mutex() { return &segment().mutex; }

 private:
  DeviceBudget(std::string device, ShmFile file)
      : device_(std::move(device)),
        file_(std::move(file)),
        lock_name_("the lock of device segment " + file_.path()) {}
  static DeviceBudget from_file(const std::string& device, ShmFile file);
  void set_claim_timing(const RegistryConfig& config);
  bool claim_live(const format::DeviceSlot& slot, uint64_t now) const;
  uint64_t guarantees_except(uint32_t slot) const;
  // Returns when `bytes` for `slot` (kMaxSlots: a new member) and the other guarantees fit the
  // budget, after reclaiming dead members if needed; InvalidArgument otherwise. Lock held.
  void require_guarantee_fits_locked(uint32_t slot, uint64_t bytes, const ProcessIdentity& who);
  format::DeviceSegment& segment() const {
    return *static_cast<format::DeviceSegment*>(file_.data());
  }
  uint64_t reclaim_dead_locked(const ProcessIdentity* except, std::vector<DeviceSlotRecord>* out);

  std::string device_;
  ShmFile file_;
  uint64_t claim_ttl_ns_ = 0;
  uint64_t claim_patience_ns_ = 0;
  std::chrono::milliseconds lock_timeout_{2000};
  std::string lock_name_;  // named in lock errors
};

}  // namespace kvpager::limits

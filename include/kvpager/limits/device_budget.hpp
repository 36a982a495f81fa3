#pragma once
// DeviceBudget: one process's handle on a device's registry segment (segment_format.hpp): the
// budget that bounds the sum of all member instances' charges, and the slot table holding
// those charges.
//
// Charging is atomic across processes: try_charge() runs under the segment's robust
// process-shared mutex, so the sum of the slots never exceeds the budget at any instant (as
// observed under the same lock, e.g. by snapshot_locked()). A holder killed inside the lock
// does not wedge anyone: the next locker recovers it (robust_mutex.hpp). Uncharging is a
// lock-free decrement (it can only move the sum away from the bound).
// Slots of dead processes keep their charge until reclaimed: try_charge() reclaims them when
// the budget refuses, and `kvpager gc` does so explicitly.
// Lock order: the device mutex is a leaf; nothing else is locked while it is held.
// Thread safety: all methods are thread-safe. Errors: StateError for a corrupt segment or a
// slot taken away, DriverError for system calls, InvalidArgument for bad names.
#include <cstdint>
#include <string>
#include <vector>

#include "kvpager/limits/process_identity.hpp"
#include "kvpager/limits/registry_config.hpp"
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
  // Sum of the taken slots' charges, read without the lock (each slot is read atomically; a
  // charge that moves during the scan may be seen before or after).
  uint64_t charged_total() const;
  // Bumps the pressure counter (members shed free memory when they see it move); returns the
  // new value. Lock-free.
  uint64_t raise_pressure() noexcept;

  // Takes a free slot for `name` owned by `who`. A slot of the same name whose owner is dead
  // is reclaimed first; one whose owner lives makes this throw StateError.
  uint32_t join(const std::string& name, const ProcessIdentity& who);
  // Frees the slot if `who` still owns it (its charge goes with it). Never throws.
  void leave(uint32_t slot, const ProcessIdentity& who) noexcept;

  // Adds `bytes` to the slot's charge if the slot stays within `instance_limit` and the
  // device sum within the budget. When the budget refuses, dead members are reclaimed and the
  // check repeated; a final refusal bumps the pressure counter (returned in *pressure).
  ChargeResult try_charge(uint32_t slot, const ProcessIdentity& who, uint64_t bytes,
                          uint64_t instance_limit, uint64_t* pressure = nullptr);
  // Removes up to `bytes` from the slot's charge (never below zero). Lock-free, never throws.
  uint64_t uncharge(uint32_t slot, uint64_t bytes) noexcept;

  // Frees the slots of dead owners; returns the bytes of charge reclaimed.
  uint64_t reclaim_dead(std::vector<DeviceSlotRecord>* reclaimed = nullptr);
  // Frees the slot held by (name, who) if any; returns its charge. For `kvpager delete`.
  uint64_t release_member(const std::string& name, const ProcessIdentity& who);

  void set_budget(uint64_t bytes);
  // The segment decoded under the lock: a consistent view of every charge.
  DeviceRecord snapshot_locked();
  // The segment's mutex, for tools and tests that must hold the lock themselves.
  pthread_mutex_t* mutex() { return &segment().mutex; }
  std::atomic<uint64_t>* recoveries() { return &segment().recoveries; }

 private:
  DeviceBudget(std::string device, ShmFile file)
      : device_(std::move(device)), file_(std::move(file)) {}
  static DeviceBudget from_file(const std::string& device, ShmFile file);
  format::DeviceSegment& segment() const {
    return *static_cast<format::DeviceSegment*>(file_.data());
  }
  uint64_t reclaim_dead_locked(const ProcessIdentity* except, std::vector<DeviceSlotRecord>* out);

  std::string device_;
  ShmFile file_;
};

}  // namespace kvpager::limits

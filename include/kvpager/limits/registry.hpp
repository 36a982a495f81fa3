#pragma once
// Registry: the view and control of every registry segment under one prefix, for the CLI
// (list, watch, top, limit, guarantee, budget, delete, gc) and for tests.
//
// scan() reads private copies of the files (never maps them for reading, so a file that
// shrinks cannot fault the reader) and decodes them with segment_decoder.hpp: files under the
// prefix that are truncated, of another version, foreign or otherwise invalid are listed in
// `skipped` with the reason and never trusted.
// Control calls validate everything before changing anything, and trust a segment only as far
// as scan() does: a file whose content names another instance (a copy, a rename) is refused.
// gc() removes a <prefix>…tmp.<pid> file only when its creator is dead and it is what a
// creator leaves (a segment's name, no larger than that segment, zeros or its magic); others
// are reported in `skipped`.
// Errors: InvalidArgument for unknown instances/devices and bad values (nothing changed);
// StateError when a live instance is to be deleted without force or a segment is unusable.
// Thread safety: a Registry holds only its config; calls are independent and thread-safe.
#include <cstdint>
#include <string>
#include <vector>

#include "kvpager/limits/registry_config.hpp"
#include "kvpager/limits/segment_decoder.hpp"

namespace kvpager::limits {

struct InstanceStatus {
  InstanceRecord record;
  std::string path;
  bool alive = false;
  uint64_t heartbeat_age_ms = 0;  // since the owner last published
};

struct DeviceStatus {
  DeviceRecord record;
  std::string path;
  uint32_t live_members = 0;
};

struct SkippedSegment {
  std::string path;
  std::string reason;
};

struct RegistrySnapshot {
  std::vector<DeviceStatus> devices;      // sorted by device label
  std::vector<InstanceStatus> instances;  // sorted by name
  std::vector<SkippedSegment> skipped;
  const DeviceStatus* find_device(const std::string& label) const;
  // The device slot an instance charges: the member of its device at its slot index with its
  // name and owner; nullptr when there is none (gc reclaimed it, or the device is unreadable).
  const DeviceSlotRecord* find_slot(const InstanceRecord& instance) const;
};

struct GcReport {
  std::vector<std::string> removed_instances;     // segments of dead owners, unlinked
  std::vector<DeviceSlotRecord> reclaimed_slots;  // device accounting of dead owners
  uint64_t reclaimed_bytes = 0;
  std::vector<std::string> removed_temporaries;  // half-created files of dead creators
  std::vector<SkippedSegment> skipped;
  // Devices whose dead members could not be reclaimed: the lock timed out (a stopped or hung
  // holder, a garbage lock word) or is unusable. The reason names the holder.
  std::vector<SkippedSegment> failed;
};

class Registry {
 public:
  explicit Registry(RegistryConfig config);
  const RegistryConfig& config() const { return config_; }

  RegistrySnapshot scan() const;

  // Resolves "cuda0", "cuda:0" or a bare ordinal "0" (when only one device has it) to the
  // label of an existing device segment; InvalidArgument otherwise.
  std::string resolve_device(const std::string& text) const;

  // Sets an instance's limit and bumps its revision. Returns the record as it was before.
  InstanceRecord set_limit(const std::string& name, uint64_t bytes);
  // A percentage ("50", "12.5%") of the instance's device memory.
  uint64_t limit_for_percent(const std::string& name, const std::string& percent) const;
  // Sets a live instance's guaranteed share of its device budget (0: none). Returns the
  // guarantee it had before. InvalidArgument when the device's guarantees would sum above its
  // budget; StateError when the owner is dead (a dead instance's guarantee is reclaimed with
  // its slot: `kvpager gc`) or its slot was taken away.
  uint64_t set_guarantee(const std::string& name, uint64_t bytes);
  // A percentage ("50", "12.5%") of the budget of the instance's device.
  uint64_t guarantee_for_percent(const std::string& name, const std::string& percent) const;
  // Sets a device budget from a size, fraction or percentage (parse_budget); InvalidArgument
  // when it would fall below the sum of the device's guarantees.
  uint64_t set_budget(const std::string& device, const std::string& value);

  // Removes an instance's segment and its device slot. A live owner needs `force` (then only
  // the segment goes: the live process keeps its accounting until it exits).
  void remove(const std::string& name, bool force);
  GcReport gc();

 private:
  InstanceStatus find_instance(const std::string& name) const;
  // The decoded segment of the device the named instance lives on; StateError when unusable.
  DeviceRecord device_of(const std::string& name) const;
  RegistryConfig config_;
};

}  // namespace kvpager::limits

#pragma once
// Decoding of registry segments (segment_format.hpp) from raw bytes, trusting nothing: size,
// magic, version, header size, string termination and character sets, pid, slot indices and
// slot states are all checked before a field is believed. Used by every reader (list, top,
// gc, the registration itself) on a private copy or a live mapping of a segment.
// Errors: never throws; a segment that fails a check yields false and a one-line reason.
// Thread safety: pure functions.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvpager/limits/process_identity.hpp"

namespace kvpager::limits {

struct InstanceRecord {
  std::string name;
  std::string model;
  std::string device;
  ProcessIdentity owner;
  uint32_t slot = 0;
  uint64_t created_unix_ms = 0;
  uint64_t limit_bytes = 0;  // format::kUnlimited: none
  uint64_t revision = 0;
  uint64_t mapped_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t reserved_bytes = 0;
  uint64_t heartbeat_ns = 0;
  uint64_t evicted_blocks = 0;
};

struct DeviceSlotRecord {
  uint32_t index = 0;
  std::string name;
  ProcessIdentity owner;
  uint64_t charged_bytes = 0;
  uint64_t guarantee_bytes = 0;
  uint64_t claim_since_ns = 0;  // 0: not waiting for its guarantee
  uint64_t claim_until_ns = 0;
  uint64_t claim_target_bytes = 0;  // the charge the claim asks to reach (see segment_format)
};

struct DeviceRecord {
  std::string device;
  uint64_t total_bytes = 0;
  uint64_t budget_bytes = 0;
  uint64_t budget_revision = 0;
  uint64_t pressure = 0;
  uint64_t recoveries = 0;
  uint64_t charged_bytes = 0;  // sum over members
  std::vector<DeviceSlotRecord> members;
};

// `bytes` must be 8-byte aligned (a mapping, or FileCopy::bytes()).
[[nodiscard]] bool decode_instance(std::span<const std::byte> bytes, InstanceRecord* out,
                                   std::string* why) noexcept;
[[nodiscard]] bool decode_device(std::span<const std::byte> bytes, DeviceRecord* out,
                                 std::string* why) noexcept;

}  // namespace kvpager::limits

#pragma once
// What the registry commands (list, watch, top) show: the snapshot as a plain-text table, as
// JSON, and the small formatting pieces top reuses. One place, so every view agrees.
#include <nlohmann/json.hpp>
#include <string>

#include "kvpager/limits/registry.hpp"

namespace kvpager::cli {

// The registry of this environment (KVPAGER_SHM_* variables); InvalidArgument when malformed.
limits::Registry registry_from_env();

// "none" for an unlimited limit, else format_size.
std::string limit_text(uint64_t bytes);
// Compact sizes for narrow columns: "512M", "1.50G", "0".
std::string short_size(uint64_t bytes);
// "alive", "stale" (owner gone), or "hung" (owner alive, no heartbeat for > 5 s).
std::string instance_state(const limits::InstanceStatus& s);
// The instance's guarantee from its device slot in `snap` (0 when it has no slot there).
uint64_t guarantee_of(const limits::RegistrySnapshot& snap, const limits::InstanceRecord& r);
// What the slot's claim keeps from the others at `now_ns` (CLOCK_MONOTONIC): what it still lacks
// of the charge it asks to reach, at most its guarantee; 0 once the claim lapsed or was met.
// Approximate: a claim past its owner's patience (that process's setting) no longer holds the
// others back, and this cannot tell.
uint64_t claimed_bytes(const limits::DeviceSlotRecord& slot, uint64_t now_ns);
// Whether the slot claims anything at `now_ns` (claimed_bytes above 0).
bool claiming(const limits::DeviceSlotRecord& slot, uint64_t now_ns);

// Devices, then instances, as aligned text. Skipped segments are not included.
std::string render_registry_table(const limits::RegistrySnapshot& snap);
nlohmann::json registry_json(const limits::RegistrySnapshot& snap);
// One "kvpager: skipped PATH: REASON" line per skipped segment, on stderr.
void report_skipped(const limits::RegistrySnapshot& snap);

}  // namespace kvpager::cli

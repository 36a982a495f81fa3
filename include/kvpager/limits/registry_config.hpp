#pragma once
// RegistryConfig: where the shared-memory registry lives and how its files are made, filled
// from KVPAGER_* environment variables; plus the validation of names, budgets and percentages
// that every entry point (library, CLI) shares.
// Errors: every function here throws InvalidArgument naming the bad input.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvpager::limits {

struct RegistryConfig {
  std::string dir = "/dev/shm";     // KVPAGER_SHM_DIR
  std::string prefix = "kvpager-";  // KVPAGER_SHM_PREFIX: namespace of the files (tests, demos)
  uint32_t mode = 0600;             // KVPAGER_SHM_MODE (octal, e.g. 0660 to share with a group)
  // Default device budget, used by the first instance that creates a device's segment:
  // a fraction of device memory ("0.95"), a percentage ("90%") or bytes ("40G").
  std::string gpu_utilization = "0.95";  // KVPAGER_GPU_UTILIZATION
  // How often an instance publishes its usage and looks for limit changes.
  std::chrono::milliseconds poll_interval{10};  // KVPAGER_REGISTRY_POLL_MS (1..50)
  // Guarantees (DeviceBudget): an instance below its guarantee that waits for memory claims
  // the difference. The claim lapses `claim_ttl` after the instance last asked, and stops
  // holding others back once it has waited `claim_patience` without getting anything (so a
  // borrower whose last request needs the memory can finish it and free it).
  std::chrono::milliseconds claim_ttl{100};        // KVPAGER_CLAIM_TTL_MS (1..10000)
  std::chrono::milliseconds claim_patience{2000};  // KVPAGER_CLAIM_PATIENCE_MS (10..600000)
  // The longest wait for a device segment's lock (held for microseconds normally). A holder
  // that is stopped or hung, or a garbage lock word, makes a charge, join or CLI command fail
  // with Timeout after this long instead of waiting forever.
  std::chrono::milliseconds lock_timeout{2000};  // KVPAGER_LOCK_TIMEOUT_MS (10..600000)
};

// Fills the fields from the environment (unset variables keep their value) and validates them.
RegistryConfig registry_config_from_env(RegistryConfig defaults = RegistryConfig{});
void validate_registry_config(const RegistryConfig& config);

// File names: <dir>/<prefix>inst-<name> and <dir>/<prefix>dev-<device>.
inline constexpr std::string_view kInstanceTag = "inst-";
inline constexpr std::string_view kDeviceTag = "dev-";
std::string instance_path(const RegistryConfig& config, std::string_view name);
std::string device_path(const RegistryConfig& config, std::string_view device);

// Instance names: 1..63 characters of [A-Za-z0-9_.-], not starting with '.' or '-', no "..".
void validate_instance_name(std::string_view name);
bool is_valid_instance_name(std::string_view name) noexcept;
// Model names: 0..63 printable ASCII characters (free text; never part of a path).
void validate_model_name(std::string_view model);
// Device labels: "cuda0", "host1": 1..31 characters of [a-z0-9].
void validate_device_label(std::string_view device);
bool is_valid_device_label(std::string_view device) noexcept;

// A byte budget from "0.9" (fraction of `total_bytes`, 0 < f <= 1), "90%" (0 < p <= 100) or a
// size ("40G", "4096"; a bare integer above 1 is bytes). Never 0.
uint64_t parse_budget(std::string_view text, uint64_t total_bytes);
// A percentage "50" or "50%" (0 <= p <= 100) as a fraction in [0, 1].
double parse_percent(std::string_view text);

}  // namespace kvpager::limits

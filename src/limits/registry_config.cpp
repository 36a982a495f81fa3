#include "kvpager/limits/registry_config.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

#include "kvpager/common/env_number.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::limits {

namespace {

// Parses a plain decimal number ("12", "0.5"); nullopt-like NaN for anything else.
double plain_number(std::string_view text) {
  if (text.empty() || text.size() > 32) {
    return NAN;
  }
  size_t dots = 0;
  for (char c : text) {
    if (c == '.') {
      ++dots;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      return NAN;
    }
  }
  if (dots > 1 || text == ".") {
    return NAN;
  }
  return std::strtod(std::string(text).c_str(), nullptr);
}

std::chrono::milliseconds env_milliseconds(const char* variable, const char* value, long low,
                                           long high) {
  return std::chrono::milliseconds(
      parse_env_number(variable, value, "a number of milliseconds", low, high));
}

}  // namespace

std::string instance_path(const RegistryConfig& c, std::string_view name) {
  return c.dir + "/" + c.prefix + std::string(kInstanceTag) + std::string(name);
}

std::string device_path(const RegistryConfig& c, std::string_view device) {
  return c.dir + "/" + c.prefix + std::string(kDeviceTag) + std::string(device);
}

bool is_valid_instance_name(std::string_view name) noexcept {
  if (name.empty() || name.size() >= format::kNameBytes) {
    return false;
  }
  if (name.front() == '.' || name.front() == '-') {
    return false;
  }
  if (name.find("..") != std::string_view::npos) {
    return false;
  }
  for (char c : name) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

void validate_instance_name(std::string_view name) {
  if (!is_valid_instance_name(name)) {
    throw InvalidArgument("invalid instance name '" + std::string(name.substr(0, 80)) +
                          "': use 1-63 characters of A-Z a-z 0-9 _ . - (no '/', no '..', not "
                          "starting with '.' or '-')");
  }
}

void validate_model_name(std::string_view model) {
  if (model.size() >= format::kNameBytes) {
    throw InvalidArgument("model name '" + std::string(model.substr(0, 80)) +
                          "' is longer than 63 characters");
  }
  for (char c : model) {
    if (c < 0x20 || c > 0x7e) {
      throw InvalidArgument("model name has a non-printable character");
    }
  }
}

bool is_valid_device_label(std::string_view device) noexcept {
  if (device.empty() || device.size() >= format::kDeviceBytes) {
    return false;
  }
  for (char c : device) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)))) {
      return false;
    }
  }
  return true;
}

void validate_device_label(std::string_view device) {
  if (!is_valid_device_label(device)) {
    throw InvalidArgument("invalid device '" + std::string(device.substr(0, 80)) +
                          "': expected a label like cuda0 or host0");
  }
}

double parse_percent(std::string_view text) {
  std::string_view t = text;
  if (!t.empty() && t.back() == '%') {
    t.remove_suffix(1);
  }
  const double p = plain_number(t);
  if (std::isnan(p) || p < 0 || p > 100) {
    throw InvalidArgument("invalid percentage '" + std::string(text.substr(0, 80)) +
                          "': expected a number from 0 to 100, e.g. 50 or 12.5%");
  }
  return p / 100.0;
}

uint64_t parse_budget(std::string_view text, uint64_t total_bytes) {
  const std::string shown(text.substr(0, 80));
  uint64_t bytes = 0;
  if (!text.empty() && text.back() == '%') {
    const double f = parse_percent(text);
    bytes = static_cast<uint64_t>(std::floor(f * static_cast<double>(total_bytes)));
  } else if (const double f = plain_number(text); !std::isnan(f) && f <= 1.0) {
    if (f <= 0) {
      throw InvalidArgument("invalid budget '" + shown + "': must be above 0");
    }
    bytes = static_cast<uint64_t>(std::floor(f * static_cast<double>(total_bytes)));
  } else {
    bytes = parse_size(text);  // throws InvalidArgument for 12XB, -1G, ...
  }
  if (bytes == 0) {
    throw InvalidArgument("invalid budget '" + shown + "': it comes to 0 bytes");
  }
  return bytes;
}

RegistryConfig registry_config_from_env(RegistryConfig c) {
  if (const char* v = std::getenv("KVPAGER_SHM_DIR")) {
    c.dir = v;
  }
  if (const char* v = std::getenv("KVPAGER_SHM_PREFIX")) {
    c.prefix = v;
  }
  if (const char* v = std::getenv("KVPAGER_SHM_MODE")) {
    // every mode from 0600 to 0777 lets the owner read and write
    c.mode = static_cast<uint32_t>(
        parse_env_number("KVPAGER_SHM_MODE", v, "an octal file mode with owner rw", 0600, 0777, 8));
  }
  if (const char* v = std::getenv("KVPAGER_GPU_UTILIZATION")) {
    parse_budget(v, 1ull << 40);  // validate the form now; the device total comes later
    c.gpu_utilization = v;
  }
  if (const char* v = std::getenv("KVPAGER_REGISTRY_POLL_MS")) {
    c.poll_interval = env_milliseconds("KVPAGER_REGISTRY_POLL_MS", v, 1, 50);
  }
  if (const char* v = std::getenv("KVPAGER_CLAIM_TTL_MS")) {
    c.claim_ttl = env_milliseconds("KVPAGER_CLAIM_TTL_MS", v, 1, 10'000);
  }
  if (const char* v = std::getenv("KVPAGER_CLAIM_PATIENCE_MS")) {
    c.claim_patience = env_milliseconds("KVPAGER_CLAIM_PATIENCE_MS", v, 10, 600'000);
  }
  if (const char* v = std::getenv("KVPAGER_LOCK_TIMEOUT_MS")) {
    c.lock_timeout = env_milliseconds("KVPAGER_LOCK_TIMEOUT_MS", v, 10, 600'000);
  }
  validate_registry_config(c);
  return c;
}

void validate_registry_config(const RegistryConfig& c) {
  if (c.dir.empty() || c.dir.front() != '/') {
    throw InvalidArgument("KVPAGER_SHM_DIR='" + c.dir + "' must be an absolute directory");
  }
  if (c.prefix.empty() || c.prefix.size() > 48 || c.prefix.find('/') != std::string::npos ||
      c.prefix.find("..") != std::string::npos || c.prefix.front() == '.') {
    throw InvalidArgument("KVPAGER_SHM_PREFIX='" + c.prefix +
                          "' must be 1-48 characters without '/' or '..', not starting with '.'");
  }
  if (c.mode > 0777 || (c.mode & 0600) != 0600) {
    throw InvalidArgument("registry file mode must lie in 0600..0777 and include owner rw");
  }
  if (c.poll_interval.count() < 1 || c.poll_interval.count() > 50) {
    throw InvalidArgument("registry poll interval must be 1 to 50 ms");
  }
  if (c.claim_ttl.count() < 1 || c.claim_ttl.count() > 10'000) {
    throw InvalidArgument("registry claim TTL must be 1 to 10000 ms");
  }
  if (c.claim_patience.count() < 10 || c.claim_patience.count() > 600'000) {
    throw InvalidArgument("registry claim patience must be 10 to 600000 ms");
  }
  if (c.lock_timeout.count() < 10 || c.lock_timeout.count() > 600'000) {
    throw InvalidArgument("registry lock timeout must be 10 to 600000 ms");
  }
}

}  // namespace kvpager::limits

#include "kvpager/tp/tp_config.hpp"

#include <cstdlib>
#include <limits>

#include "kvpager/common/env_number.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::tp {

DeviceMode parse_device_mode(const std::string& name) {
  if (name == "auto") return DeviceMode::kAuto;
  if (name == "per-rank" || name == "per_rank") return DeviceMode::kPerRank;
  if (name == "same") return DeviceMode::kSame;
  throw InvalidArgument("unknown device mode '" + name + "' (choose per-rank, same or auto)");
}

const char* device_mode_name(DeviceMode mode) {
  switch (mode) {
    case DeviceMode::kAuto:
      return "auto";
    case DeviceMode::kPerRank:
      return "per-rank";
    case DeviceMode::kSame:
      return "same";
  }
  return "?";
}

const char* transport_name(Transport transport) {
  return transport == Transport::kSocket ? "socket" : "shm";
}

Transport parse_transport(const std::string& name) {
  if (name == "socket") return Transport::kSocket;
  if (name == "shm") return Transport::kShm;
  throw InvalidArgument("unknown tp transport '" + name + "' (choose socket or shm)");
}

namespace {
struct OpName {
  const char* name;
  vmm::BackendOp op;
};
constexpr OpName kOps[] = {{"create", vmm::BackendOp::kCreate},
                           {"release", vmm::BackendOp::kRelease},
                           {"map", vmm::BackendOp::kMap},
                           {"set_access", vmm::BackendOp::kSetAccess},
                           {"unmap", vmm::BackendOp::kUnmap}};

uint64_t env_number(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  return parse_env_number(name, v, "a non-negative integer");
}
}  // namespace

FaultSpec parse_fault(const std::string& text, int rank) {
  FaultSpec f;
  const auto colon = text.find(':');
  const std::string op = text.substr(0, colon);
  bool known = false;
  for (const auto& o : kOps) {
    if (op == o.name) {
      f.op = o.op;
      known = true;
    }
  }
  int nth = 0;
  if (colon != std::string::npos) {
    try {
      nth = static_cast<int>(parse_env_number("fault", std::string_view(text).substr(colon + 1),
                                              "a call number", 1, std::numeric_limits<int>::max()));
    } catch (const InvalidArgument&) {
      nth = 0;  // refused below, with the fault's own message
    }
  }
  if (!known || nth < 1) {
    throw InvalidArgument(
        "fault '" + text +
        "' is not op:nth (op: create, release, map, set_access, unmap; nth >= 1)");
  }
  f.nth_call = nth;
  f.rank = rank;
  return f;
}

std::string format_fault(const FaultSpec& fault) {
  for (const auto& o : kOps) {
    if (o.op == fault.op) return std::string(o.name) + ":" + std::to_string(fault.nth_call);
  }
  return "?";
}

DeviceLockMode parse_device_lock_mode(const std::string& name) {
  if (name == "auto") return DeviceLockMode::kAuto;
  if (name == "on") return DeviceLockMode::kOn;
  if (name == "off") return DeviceLockMode::kOff;
  throw InvalidArgument("device lock \"" + name + "\" is not auto, on or off");
}

TpConfig tp_config_from_env(TpConfig config) {
  config.timeout = std::chrono::milliseconds(
      env_number("KVPAGER_TP_TIMEOUT_MS", static_cast<uint64_t>(config.timeout.count())));
  config.start_timeout = std::chrono::milliseconds(env_number(
      "KVPAGER_TP_START_TIMEOUT_MS", static_cast<uint64_t>(config.start_timeout.count())));
  config.spin_us = static_cast<uint32_t>(env_number("KVPAGER_TP_SPIN_US", config.spin_us));
  config.worker.spin_us =
      static_cast<uint32_t>(env_number("KVPAGER_TP_WORKER_SPIN_US", config.worker.spin_us));
  config.worker.lock_spin_us =
      static_cast<uint32_t>(env_number("KVPAGER_TP_LOCK_SPIN_US", config.worker.lock_spin_us));
  if (const char* v = std::getenv("KVPAGER_TP_DEVICE_LOCK"); v != nullptr && *v != '\0') {
    try {
      config.device_lock = parse_device_lock_mode(v);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(std::string("KVPAGER_TP_DEVICE_LOCK: ") + e.what());
    }
  }
  return config;
}

kv::KvGeometry bench_geometry(uint32_t num_layers, uint32_t block_size) {
  kv::KvGeometry g;
  g.num_layers = num_layers;
  g.kv_heads = 8;
  g.head_dim = 128;
  g.dtype_bytes = 2;
  g.block_size = block_size;
  g.validate();
  return g;
}

uint64_t handle_bytes_for(const kv::KvGeometry& geometry, kv::KvLayout layout, uint64_t wanted,
                          uint64_t granularity) {
  const uint64_t cell = layout == kv::KvLayout::kInterleaved ? geometry.block_bytes_all_layers()
                                                             : geometry.block_bytes();
  return round_up(std::max(wanted, cell), granularity);
}

}  // namespace kvpager::tp

// kvpager._kvpager.registry_snapshot(): the shared-memory registry as `kvpager list --json` reads
// it, for Python readers in other processes than the instances' (a serving engine's metrics
// endpoint, monitoring). Reads only; never takes the device lock.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <ctime>

#include "bindings.hpp"
#include "kvpager/limits/registry.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace py = pybind11;

namespace kvpager::python {
namespace {

uint64_t monotonic_now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

py::object optional_limit(uint64_t bytes) {
  return bytes == limits::format::kUnlimited ? py::object(py::none()) : py::int_(bytes);
}

py::dict instance_dict(const limits::RegistrySnapshot& snap, const limits::InstanceStatus& s,
                       uint64_t now_ns) {
  const limits::InstanceRecord& r = s.record;
  const limits::DeviceSlotRecord* slot = snap.find_slot(r);
  py::dict d;
  d["name"] = r.name;
  d["model"] = r.model;
  d["device"] = r.device;
  d["pid"] = r.owner.pid;
  d["alive"] = s.alive;
  d["heartbeat_age_ms"] = s.heartbeat_age_ms;
  d["limit_bytes"] = optional_limit(r.limit_bytes);
  d["mapped_bytes"] = r.mapped_bytes;
  d["used_bytes"] = r.used_bytes;
  d["reserved_bytes"] = r.reserved_bytes;
  d["evicted_blocks"] = r.evicted_blocks;
  d["guarantee_bytes"] = slot != nullptr ? slot->guarantee_bytes : 0;
  const bool claim_live =
      slot != nullptr && slot->claim_since_ns != 0 && now_ns < slot->claim_until_ns;
  d["claim_target_bytes"] = claim_live ? slot->claim_target_bytes : 0;
  return d;
}

py::dict snapshot(const std::string& prefix) {
  limits::RegistryConfig config = limits::registry_config_from_env();
  if (!prefix.empty()) config.prefix = prefix;
  limits::RegistrySnapshot snap;
  {
    py::gil_scoped_release unlocked;
    snap = limits::Registry(config).scan();
  }
  const uint64_t now = monotonic_now_ns();
  py::list devices;
  for (const auto& dev : snap.devices) {
    py::dict d;
    d["device"] = dev.record.device;
    d["total_bytes"] = dev.record.total_bytes;
    d["budget_bytes"] = dev.record.budget_bytes;
    d["charged_bytes"] = dev.record.charged_bytes;
    d["live_members"] = dev.live_members;
    devices.append(d);
  }
  py::list instances;
  for (const auto& s : snap.instances) instances.append(instance_dict(snap, s, now));
  py::list skipped;
  for (const auto& k : snap.skipped) skipped.append(py::make_tuple(k.path, k.reason));
  py::dict out;
  out["devices"] = devices;
  out["instances"] = instances;
  out["skipped"] = skipped;
  return out;
}

}  // namespace

void bind_registry(py::module_& m) {
  m.def("registry_snapshot", &snapshot, py::arg("prefix") = "",
        "The registry's devices and instances now, as `kvpager list --json` sees them: "
        "{'devices': [{'device', 'total_bytes', 'budget_bytes', 'charged_bytes', "
        "'live_members'}], 'instances': [{'name', 'model', 'device', 'pid', 'alive', "
        "'heartbeat_age_ms', 'limit_bytes' (None: no limit), 'mapped_bytes', 'used_bytes', "
        "'reserved_bytes', 'evicted_blocks', 'guarantee_bytes', 'claim_target_bytes' (0: no "
        "live claim)}], 'skipped': [(path, reason)]}. The registry is KVPAGER_SHM_DIR / "
        "KVPAGER_SHM_PREFIX's unless `prefix` is given. Reads only; InvalidArgument for a "
        "malformed environment.");
}

}  // namespace kvpager::python

#include "admin/registry_view.hpp"

#include <algorithm>
#include <cstdio>

#include "kvpager/common/units.hpp"
#include "kvpager/limits/process_identity.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::cli {

namespace {

// Left-aligned columns separated by two spaces.
std::string columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) {
      width.resize(r.size(), 0);
    }
    for (size_t i = 0; i < r.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) {
        line += std::string(width[i] - r[i].size() + 2, ' ');
      }
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

limits::Registry registry_from_env() {
  return limits::Registry(limits::registry_config_from_env());
}

std::string limit_text(uint64_t bytes) {
  return bytes == limits::format::kUnlimited ? "none" : format_size(bytes);
}

std::string short_size(uint64_t bytes) {
  if (bytes == limits::format::kUnlimited) {
    return "none";
  }
  const char* units = "KMGT";
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u < 0) {
    std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
  } else if (v >= 100 || v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%.0f%c", v, units[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.*f%c", v >= 10 ? 1 : 2, v, units[u]);
  }
  return buf;
}

std::string instance_state(const limits::InstanceStatus& s) {
  if (!s.alive) {
    return "stale";
  }
  return s.heartbeat_age_ms > 5000 ? "hung" : "alive";
}

uint64_t guarantee_of(const limits::RegistrySnapshot& snap, const limits::InstanceRecord& r) {
  const limits::DeviceSlotRecord* slot = snap.find_slot(r);
  return slot ? slot->guarantee_bytes : 0;
}

uint64_t claimed_bytes(const limits::DeviceSlotRecord& slot, uint64_t now_ns) {
  if (slot.claim_since_ns == 0 || now_ns >= slot.claim_until_ns) {
    return 0;
  }
  const uint64_t want = std::min(slot.claim_target_bytes, slot.guarantee_bytes);
  return want > slot.charged_bytes ? want - slot.charged_bytes : 0;
}

bool claiming(const limits::DeviceSlotRecord& slot, uint64_t now_ns) {
  return claimed_bytes(slot, now_ns) > 0;
}

std::string render_registry_table(const limits::RegistrySnapshot& snap) {
  std::string out;
  std::vector<std::vector<std::string>> dev{
      {"DEVICE", "BUDGET", "CHARGED", "FREE", "MEMORY", "INSTANCES"}};
  for (const auto& d : snap.devices) {
    const auto& r = d.record;
    const uint64_t free = r.budget_bytes > r.charged_bytes ? r.budget_bytes - r.charged_bytes : 0;
    dev.push_back({r.device, format_size(r.budget_bytes), format_size(r.charged_bytes),
                   format_size(free), format_size(r.total_bytes),
                   std::to_string(d.live_members) + " live / " + std::to_string(r.members.size())});
  }
  if (snap.devices.empty()) {
    out += "no devices\n";
  } else {
    out += columns(dev);
  }
  out += "\n";
  std::vector<std::vector<std::string>> inst{{"NAME", "MODEL", "DEVICE", "PID", "LIMIT",
                                              "GUARANTEE", "USED", "MAPPED", "RESERVED", "STATUS"}};
  for (const auto& s : snap.instances) {
    const auto& r = s.record;
    const uint64_t guarantee = guarantee_of(snap, r);
    inst.push_back({r.name, r.model.empty() ? "-" : r.model, r.device, std::to_string(r.owner.pid),
                    limit_text(r.limit_bytes), guarantee == 0 ? "-" : format_size(guarantee),
                    format_size(r.used_bytes), format_size(r.mapped_bytes),
                    format_size(r.reserved_bytes), instance_state(s)});
  }
  if (snap.instances.empty()) {
    out += "no instances\n";
  } else {
    out += columns(inst);
  }
  return out;
}

nlohmann::json registry_json(const limits::RegistrySnapshot& snap) {
  using nlohmann::json;
  json devices = json::array(), instances = json::array(), skipped = json::array();
  const uint64_t now = limits::monotonic_ns();
  for (const auto& d : snap.devices) {
    const auto& r = d.record;
    json members = json::array();
    for (const auto& m : r.members) {
      members.push_back({{"slot", m.index},
                         {"name", m.name},
                         {"pid", m.owner.pid},
                         {"charged_bytes", m.charged_bytes},
                         {"guarantee_bytes", m.guarantee_bytes},
                         {"claiming", claiming(m, now)},
                         {"claimed_bytes", claimed_bytes(m, now)}});
    }
    devices.push_back({{"device", r.device},
                       {"path", d.path},
                       {"total_bytes", r.total_bytes},
                       {"budget_bytes", r.budget_bytes},
                       {"charged_bytes", r.charged_bytes},
                       {"budget_revision", r.budget_revision},
                       {"pressure", r.pressure},
                       {"lock_recoveries", r.recoveries},
                       {"live_members", d.live_members},
                       {"members", members}});
  }
  for (const auto& s : snap.instances) {
    const auto& r = s.record;
    const limits::DeviceSlotRecord* slot = snap.find_slot(r);
    instances.push_back(
        {{"name", r.name},
         {"model", r.model},
         {"device", r.device},
         {"path", s.path},
         {"pid", r.owner.pid},
         {"start_time", r.owner.start_time},
         {"limit_bytes",
          r.limit_bytes == limits::format::kUnlimited ? json(nullptr) : json(r.limit_bytes)},
         {"guarantee_bytes", slot ? slot->guarantee_bytes : 0},
         {"claiming", slot != nullptr && claiming(*slot, now)},
         {"claimed_bytes", slot ? claimed_bytes(*slot, now) : 0},
         {"used_bytes", r.used_bytes},
         {"mapped_bytes", r.mapped_bytes},
         {"reserved_bytes", r.reserved_bytes},
         {"evicted_blocks", r.evicted_blocks},
         {"revision", r.revision},
         {"heartbeat_age_ms", s.heartbeat_age_ms},
         {"alive", s.alive},
         {"status", instance_state(s)}});
  }
  for (const auto& k : snap.skipped) {
    skipped.push_back({{"path", k.path}, {"reason", k.reason}});
  }
  return {{"devices", devices}, {"instances", instances}, {"skipped", skipped}};
}

void report_skipped(const limits::RegistrySnapshot& snap) {
  for (const auto& k : snap.skipped) {
    std::fprintf(stderr, "kvpager: skipped %s: %s\n", k.path.c_str(), k.reason.c_str());
  }
}

}  // namespace kvpager::cli

#include "kvpager/limits/registry.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/process_identity.hpp"
#include "kvpager/limits/segment_format.hpp"
#include "kvpager/limits/shm_file.hpp"

namespace kvpager::limits {

namespace {

// Names of the files under `dir` that start with `prefix`, sorted.
std::vector<std::string> entries_with_prefix(const std::string& dir, const std::string& prefix) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
  if (!d) {
    throw_errno("opendir", errno, dir);
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool is_temporary(const std::string& name, pid_t* creator) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos) {
    return false;
  }
  const std::string digits = name.substr(at + 5);
  if (digits.empty() || digits.size() > 9 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  *creator = static_cast<pid_t>(std::stol(digits));
  return true;
}

// "" when `file` (a name is_temporary() accepts) is what ShmFile::create_published leaves behind:
// <prefix>inst-<name> or <prefix>dev-<label> plus .tmp.<pid>, a regular file no larger than
// that segment, holding zeros (not yet initialised) or starting with that segment's magic.
// Otherwise why not: gc removes nothing else.
std::string why_not_a_temporary(const RegistryConfig& config, const std::string& file,
                                const std::string& path) {
  const std::string rest =
      file.substr(config.prefix.size(), file.rfind(".tmp.") - config.prefix.size());
  size_t bytes = 0;
  const char* magic = nullptr;
  if (rest.rfind(kInstanceTag, 0) == 0 &&
      is_valid_instance_name(rest.substr(kInstanceTag.size()))) {
    bytes = sizeof(format::InstanceSegment);
    magic = format::kInstanceMagic;
  } else if (rest.rfind(kDeviceTag, 0) == 0 &&
             is_valid_device_label(rest.substr(kDeviceTag.size()))) {
    bytes = sizeof(format::DeviceSegment);
    magic = format::kDeviceMagic;
  } else {
    return "its name is not that of a segment";
  }
  std::string why;
  const auto copy = read_file_copy(path, bytes, &why);
  if (!copy) {
    return why;
  }
  if (copy->size > bytes) {
    return "it is larger than a segment";
  }
  const auto* p = reinterpret_cast<const char*>(copy->words.data());
  const bool zeros = std::all_of(p, p + copy->size, [](char c) { return c == 0; });
  const bool ours = copy->size >= sizeof format::kInstanceMagic &&
                    std::memcmp(p, magic, sizeof format::kInstanceMagic) == 0;
  return zeros || ours ? "" : "its content is not a segment's";
}

std::string name_mismatch(const std::string& path, const std::string& inside) {
  return "segment " + path + " names instance '" + inside +
         "', not its file name (a copy or a rename of another instance's segment?); nothing "
         "was changed. Remove it (rm " +
         path + ")";
}

uint64_t age_ms(uint64_t then_ns) {
  const uint64_t now = monotonic_ns();
  return now > then_ns ? (now - then_ns) / 1000000 : 0;
}

}  // namespace

const DeviceStatus* RegistrySnapshot::find_device(const std::string& label) const {
  for (const auto& d : devices) {
    if (d.record.device == label) {
      return &d;
    }
  }
  return nullptr;
}

const DeviceSlotRecord* RegistrySnapshot::find_slot(const InstanceRecord& instance) const {
  const DeviceStatus* d = find_device(instance.device);
  if (!d) {
    return nullptr;
  }
  for (const auto& m : d->record.members) {
    if (m.index == instance.slot && m.name == instance.name && m.owner.pid == instance.owner.pid &&
        m.owner.start_time == instance.owner.start_time) {
      return &m;
    }
  }
  return nullptr;
}

Registry::Registry(RegistryConfig config) : config_(std::move(config)) {
  validate_registry_config(config_);
}

RegistrySnapshot Registry::scan() const {
  RegistrySnapshot snap;
  for (const std::string& file : entries_with_prefix(config_.dir, config_.prefix)) {
    const std::string path = config_.dir + "/" + file;
    const std::string rest = file.substr(config_.prefix.size());
    pid_t creator = 0;
    if (is_temporary(file, &creator)) {
      continue;  // being created right now (or gc's business)
    }
    std::string why;
    if (rest.rfind(kInstanceTag, 0) == 0) {
      auto copy = read_file_copy(path, sizeof(format::InstanceSegment), &why);
      InstanceStatus s;
      if (copy && decode_instance(copy->bytes(), &s.record, &why)) {
        if (s.record.name != rest.substr(kInstanceTag.size())) {
          snap.skipped.push_back(
              {path, "names instance '" + s.record.name + "', not its file name"});
          continue;
        }
        s.path = path;
        s.alive = is_alive(s.record.owner);
        s.heartbeat_age_ms = age_ms(s.record.heartbeat_ns);
        snap.instances.push_back(std::move(s));
        continue;
      }
    } else if (rest.rfind(kDeviceTag, 0) == 0) {
      auto copy = read_file_copy(path, sizeof(format::DeviceSegment), &why);
      DeviceStatus d;
      if (copy && decode_device(copy->bytes(), &d.record, &why)) {
        if (d.record.device != rest.substr(kDeviceTag.size())) {
          snap.skipped.push_back(
              {path, "names device '" + d.record.device + "', not its file name"});
          continue;
        }
        d.path = path;
        for (const auto& m : d.record.members) {
          d.live_members += is_alive(m.owner) ? 1 : 0;
        }
        snap.devices.push_back(std::move(d));
        continue;
      }
    } else {
      why = "not a kvpager segment name (expected " + config_.prefix + std::string(kInstanceTag) +
            "NAME or " + config_.prefix + std::string(kDeviceTag) + "DEVICE)";
    }
    snap.skipped.push_back({path, why});
  }
  return snap;
}

std::string Registry::resolve_device(const std::string& text) const {
  const RegistrySnapshot snap = scan();
  std::string label = text;
  label.erase(std::remove(label.begin(), label.end(), ':'), label.end());
  if (snap.find_device(label)) {
    return label;
  }
  const bool ordinal =
      !text.empty() && text.size() < 6 &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (ordinal) {
    std::vector<std::string> matches;
    for (const auto& d : snap.devices) {
      const std::string& l = d.record.device;
      const size_t digits = l.find_first_of("0123456789");
      if (digits != std::string::npos && l.substr(digits) == text) {
        matches.push_back(l);
      }
    }
    if (matches.size() == 1) {
      return matches[0];
    }
    if (matches.size() > 1) {
      throw InvalidArgument("device '" + text + "' is ambiguous (" + matches[0] + ", " +
                            matches[1] + "); name it in full");
    }
  }
  std::string known;
  for (const auto& d : snap.devices) {
    known += (known.empty() ? "" : ", ") + d.record.device;
  }
  throw InvalidArgument("unknown device '" + text.substr(0, 80) +
                        "' (known: " + (known.empty() ? "none" : known) + ")");
}

InstanceStatus Registry::find_instance(const std::string& name) const {
  validate_instance_name(name);
  const std::string path = instance_path(config_, name);
  std::string why;
  auto copy = read_file_copy(path, sizeof(format::InstanceSegment), &why);
  if (!copy) {
    throw InvalidArgument("unknown instance '" + name + "': no segment " + path);
  }
  InstanceStatus s;
  if (!decode_instance(copy->bytes(), &s.record, &why)) {
    throw StateError("segment " + path + " is unusable: " + why);
  }
  if (s.record.name != name) {  // what scan() (list) refuses, writers refuse too
    throw StateError(name_mismatch(path, s.record.name));
  }
  s.path = path;
  s.alive = is_alive(s.record.owner);
  s.heartbeat_age_ms = age_ms(s.record.heartbeat_ns);
  return s;
}

InstanceRecord Registry::set_limit(const std::string& name, uint64_t bytes) {
  const InstanceStatus found = find_instance(name);
  ShmFile file = ShmFile::open_mapped(found.path, sizeof(format::InstanceSegment), true);
  InstanceRecord before;
  std::string why;
  if (!decode_instance(file.bytes(), &before, &why)) {
    throw StateError("segment " + found.path + " changed while being opened: " + why);
  }
  if (before.name != name) {
    throw StateError(name_mismatch(found.path, before.name));
  }
  auto* s = static_cast<format::InstanceSegment*>(file.data());
  s->limit_bytes.store(bytes, std::memory_order_release);
  s->revision.fetch_add(1, std::memory_order_acq_rel);
  return before;
}

DeviceRecord Registry::device_of(const std::string& name) const {
  const InstanceStatus found = find_instance(name);
  const RegistrySnapshot snap = scan();
  const DeviceStatus* dev = snap.find_device(found.record.device);
  if (!dev) {
    throw StateError("instance '" + name + "' names device " + found.record.device +
                     ", which has no usable segment");
  }
  return dev->record;
}

uint64_t Registry::limit_for_percent(const std::string& name, const std::string& percent) const {
  const double fraction = parse_percent(percent);
  return static_cast<uint64_t>(fraction * static_cast<double>(device_of(name).total_bytes));
}

uint64_t Registry::set_guarantee(const std::string& name, uint64_t bytes) {
  const InstanceStatus found = find_instance(name);
  const InstanceRecord& r = found.record;
  if (!found.alive) {
    throw StateError("instance '" + name + "' is not running (pid " + std::to_string(r.owner.pid) +
                     " is gone), so it has no share to guarantee; run `kvpager gc` to remove it");
  }
  DeviceBudget budget = [&] {
    try {
      return DeviceBudget::open_existing(config_, r.device);
    } catch (const InvalidArgument&) {
      throw StateError("instance '" + name + "' names device " + r.device +
                       ", which has no segment; restart the instance");
    }
  }();
  RegistrySnapshot owned;
  owned.devices.push_back({budget.snapshot_locked(), budget.path(), 0});
  const DeviceSlotRecord* slot = owned.find_slot(r);
  if (!slot) {
    throw StateError("instance '" + name + "' holds no slot on device " + r.device +
                     " any more (taken by `kvpager delete --force` or gc?); restart the instance");
  }
  // set_guarantee re-checks the owner under the lock, so a slot taken meanwhile is refused.
  budget.set_guarantee(r.slot, r.owner, bytes);
  return slot->guarantee_bytes;
}

uint64_t Registry::guarantee_for_percent(const std::string& name,
                                         const std::string& percent) const {
  const double fraction = parse_percent(percent);
  return static_cast<uint64_t>(fraction * static_cast<double>(device_of(name).budget_bytes));
}

uint64_t Registry::set_budget(const std::string& device, const std::string& value) {
  const std::string label = resolve_device(device);
  DeviceBudget budget = DeviceBudget::open_existing(config_, label);
  const uint64_t bytes = parse_budget(value, budget.total_bytes());
  budget.set_budget(bytes);
  return bytes;
}

void Registry::remove(const std::string& name, bool force) {
  const InstanceStatus found = find_instance(name);
  if (found.alive && !force) {
    throw StateError("instance '" + name + "' is alive (pid " +
                     std::to_string(found.record.owner.pid) +
                     "); stop it, or pass --force to remove its segment anyway");
  }
  if (::unlink(found.path.c_str()) != 0 && errno != ENOENT) {
    throw_errno("unlink", errno, found.path);
  }
  if (found.alive) {
    return;  // its slot is accounting for memory the process still holds
  }
  try {
    DeviceBudget::open_existing(config_, found.record.device)
        .release_member(found.record.name, found.record.owner);
  } catch (const InvalidArgument&) {  // no device segment: nothing to release
  }
}

GcReport Registry::gc() {
  GcReport report;
  const RegistrySnapshot snap = scan();
  report.skipped = snap.skipped;
  for (const InstanceStatus& s : snap.instances) {
    if (s.alive) {
      continue;
    }
    // Re-check right before unlinking: only a dead owner's file goes.
    std::string why;
    auto copy = read_file_copy(s.path, sizeof(format::InstanceSegment), &why);
    InstanceRecord now;
    if (!copy || !decode_instance(copy->bytes(), &now, &why)) {
      continue;
    }
    if (now.owner.pid != s.record.owner.pid || is_alive(now.owner)) {
      continue;
    }
    if (::unlink(s.path.c_str()) == 0) {
      report.removed_instances.push_back(s.record.name);
    }
  }
  for (const DeviceStatus& d : snap.devices) {
    try {
      DeviceBudget budget = DeviceBudget::open_existing(config_, d.record.device);
      report.reclaimed_bytes += budget.reclaim_dead(&report.reclaimed_slots);
    } catch (const Error& e) {
      report.failed.push_back({d.path, e.what()});
    }
  }
  for (const std::string& file : entries_with_prefix(config_.dir, config_.prefix)) {
    pid_t creator = 0;
    if (is_temporary(file, &creator) && !is_alive({creator, 0})) {
      const std::string path = config_.dir + "/" + file;
      const std::string why = why_not_a_temporary(config_, file, path);
      if (!why.empty()) {
        report.skipped.push_back({path, "named like a temporary of dead pid " +
                                            std::to_string(creator) + ", but " + why +
                                            "; not removed"});
      } else if (::unlink(path.c_str()) == 0) {
        report.removed_temporaries.push_back(path);
      }
    }
  }
  return report;
}

}  // namespace kvpager::limits

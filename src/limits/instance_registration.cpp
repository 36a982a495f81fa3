#include "kvpager/limits/instance_registration.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "kvpager/common/error.hpp"
#include "kvpager/limits/guarantee_shares.hpp"
#include "kvpager/limits/segment_decoder.hpp"

namespace kvpager::limits {

namespace {

void copy_string(char* dst, size_t cap, const std::string& src) {
  std::memcpy(dst, src.data(), std::min(src.size(), cap - 1));
}

uint64_t unix_ms() {
  using namespace std::chrono;
  return static_cast<uint64_t>(
      duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

// What occupies `path` when creating it failed: "" when it may be replaced (its owner is dead),
// otherwise why it may not.
std::string why_name_is_taken(const std::string& path, const ProcessIdentity& self) {
  std::string why;
  auto copy = read_file_copy(path, sizeof(format::InstanceSegment), &why);
  if (!copy) {
    return why.find("No such file") != std::string::npos ? "" : why;
  }
  InstanceRecord r;
  if (!decode_instance(copy->bytes(), &r, &why)) {
    return "it exists and is not a usable instance segment (" + why + "); remove it";
  }
  if (r.owner.pid == self.pid && r.owner.start_time == self.start_time) {
    return "this process registered it already";
  }
  if (is_alive(r.owner)) {
    return "it is in use by pid " + std::to_string(r.owner.pid);
  }
  return "";
}

}  // namespace

std::shared_ptr<InstanceRegistration> InstanceRegistration::create(const RegistryConfig& config,
                                                                   const InstanceSpec& spec) {
  validate_registry_config(config);
  validate_instance_name(spec.name);
  validate_model_name(spec.model);
  validate_device_label(spec.device);
  DeviceBudget device = DeviceBudget::open_or_create(config, spec.device, spec.device_total_bytes);
  const ProcessIdentity self = current_process();
  const std::string path = instance_path(config, spec.name);
  for (int attempt = 0; attempt < 4; ++attempt) {
    const uint32_t slot = device.join(spec.name, self, spec.guarantee_bytes);
    std::optional<ShmFile> file;
    try {
      file = ShmFile::create_published(
          path, sizeof(format::InstanceSegment), config.mode, [&](void* p) {
            auto* s = static_cast<format::InstanceSegment*>(p);
            std::memcpy(s->header.magic, format::kInstanceMagic, sizeof s->header.magic);
            s->header.version = format::kVersion;
            s->header.segment_bytes = sizeof(format::InstanceSegment);
            copy_string(s->name, sizeof s->name, spec.name);
            copy_string(s->model, sizeof s->model, spec.model);
            copy_string(s->device, sizeof s->device, spec.device);
            s->pid = self.pid;
            s->slot = slot;
            s->start_time = self.start_time;
            s->created_unix_ms = unix_ms();
            s->limit_bytes.store(spec.limit_bytes);
            s->heartbeat_ns.store(monotonic_ns());
          });
    } catch (...) {
      device.leave(slot, self);
      throw;
    }
    if (file) {
      return std::shared_ptr<InstanceRegistration>(
          new InstanceRegistration(config, spec, std::move(device), self, slot, std::move(*file)));
    }
    device.leave(slot, self);
    const std::string why = why_name_is_taken(path, self);
    if (!why.empty()) {
      throw StateError("cannot register instance '" + spec.name + "' (" + path + "): " + why);
    }
    // A dead instance's segment: replace it (and drop its slot, wherever it is).
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      throw_errno("unlink", errno, path);
    }
  }
  throw StateError("cannot register instance '" + spec.name + "': " + path + " keeps reappearing");
}

InstanceRegistration::InstanceRegistration(RegistryConfig config, InstanceSpec spec,
                                           DeviceBudget device, ProcessIdentity self, uint32_t slot,
                                           ShmFile file)
    : config_(std::move(config)),
      spec_(std::move(spec)),
      device_(std::move(device)),
      self_(self),
      slot_(slot),
      file_(std::move(file)) {
  seen_revision_ = segment().revision.load();
  seen_budget_revision_ = device_.budget_revision();
  pressure_at_join_ = device_.pressure();
}

InstanceRegistration::~InstanceRegistration() {
  device_.leave(slot_, self_);
  if (file_.still_linked()) {
    ::unlink(file_.path().c_str());
  }
}

bool InstanceRegistration::try_charge(uint64_t bytes) {
  const ChargeResult r =
      device_.try_charge(slot_, self_, bytes, instance_limit_bytes(), &own_raises_);
  if (r != ChargeResult::kCharged) {
    return false;
  }
  segment().mapped_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return true;
}

void InstanceRegistration::uncharge(uint64_t bytes) {
  // The published copy goes down first, so it never shows more than the slot holds.
  std::atomic<uint64_t>& mapped = segment().mapped_bytes;
  uint64_t current = mapped.load(std::memory_order_relaxed);
  while (!mapped.compare_exchange_weak(current, current - std::min(current, bytes),
                                       std::memory_order_relaxed)) {
  }
  device_.uncharge(slot_, bytes);
}

uint64_t InstanceRegistration::limit_bytes() const {
  return std::min(instance_limit_bytes(), device_.budget_bytes());
}

uint64_t InstanceRegistration::charged_bytes() const {
  return device_.charged_of(slot_);
}

uint64_t InstanceRegistration::headroom_bytes() const {
  const uint64_t own = charged_bytes(), limit = instance_limit_bytes();
  const DeviceTotals device{device_.budget_bytes(), device_.charged_total()};
  return headroom_of(own, limit, device_.claimed_by_others(slot_), device);
}

uint64_t InstanceRegistration::excess_bytes() const {
  const uint64_t own = charged_bytes(), limit = instance_limit_bytes();
  const DeviceTotals device{device_.budget_bytes(), device_.charged_total()};
  return excess_of(own, limit, device_.guarantee_of(slot_), device);
}

uint64_t InstanceRegistration::guarantee_bytes() const {
  return device_.guarantee_of(slot_);
}

uint64_t InstanceRegistration::unpool_budget_share(uint64_t share) noexcept {
  const uint64_t budget = device_.unpool_share(slot_, self_, share);
  segment().revision.fetch_add(1, std::memory_order_acq_rel);  // its guarantee went with it
  return budget;
}

void InstanceRegistration::set_guarantee(uint64_t bytes) {
  device_.set_guarantee(slot_, self_, bytes);
  segment().revision.fetch_add(1, std::memory_order_acq_rel);
}

uint64_t InstanceRegistration::instance_limit_bytes() const {
  return segment().limit_bytes.load(std::memory_order_acquire);
}

void InstanceRegistration::set_limit(uint64_t bytes) {
  segment().limit_bytes.store(bytes, std::memory_order_release);
  segment().revision.fetch_add(1, std::memory_order_acq_rel);
}

void InstanceRegistration::ask_for_room(uint64_t bytes) noexcept {
  device_.claim(slot_, self_, bytes);
  try {
    device_.reclaim_dead();
  } catch (...) {  // a registry we cannot lock now: the pressure below still goes out
  }
  own_raises_.fetch_add(1, std::memory_order_acq_rel);  // before the raise others can see
  device_.raise_pressure();
}

uint64_t InstanceRegistration::pressure_from_others() noexcept {
  // Pressure first: a raise of ours it shows was counted in own_raises_ before it, so the
  // difference never runs ahead of what others raised (it may lag behind by a raise of ours
  // in flight, which the running maximum hides).
  const uint64_t pressure = device_.pressure() - pressure_at_join_;
  const uint64_t own = own_raises_.load(std::memory_order_acquire);
  const uint64_t now = pressure > own ? pressure - own : 0;
  uint64_t seen = others_pressure_.load(std::memory_order_relaxed);
  while (seen < now &&
         !others_pressure_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
  return std::max(seen, now);
}

LinkEvents InstanceRegistration::poll(const InstanceUsage& usage) noexcept {
  format::InstanceSegment& s = segment();
  const uint64_t mapped = s.mapped_bytes.load(std::memory_order_relaxed);
  s.used_bytes.store(usage.used_bytes, std::memory_order_relaxed);
  s.reserved_bytes.store(mapped > usage.used_bytes ? mapped - usage.used_bytes : 0,
                         std::memory_order_relaxed);
  s.heartbeat_ns.store(monotonic_ns(), std::memory_order_relaxed);

  LinkEvents events;
  const uint64_t revision = s.revision.load(std::memory_order_acquire);
  const uint64_t budget_revision = device_.budget_revision();
  events.limit_changed = revision != seen_revision_ || budget_revision != seen_budget_revision_;
  seen_revision_ = revision;
  seen_budget_revision_ = budget_revision;
  const uint64_t others = pressure_from_others();
  events.shed = others != seen_others_pressure_;
  seen_others_pressure_ = others;
  events.keep_bytes = device_.guarantee_of(slot_);
  events.owed_bytes = device_.owed_by(slot_);
  return events;
}

}  // namespace kvpager::limits

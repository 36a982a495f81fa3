#include "kvpager/limits/device_budget.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/guarantee_shares.hpp"
#include "kvpager/limits/robust_mutex.hpp"

namespace kvpager::limits {

namespace {

using format::DeviceSegment;
using format::DeviceSlot;

void copy_string(char* dst, size_t cap, const std::string& src) {
  std::memset(dst, 0, cap);
  std::memcpy(dst, src.data(), std::min(src.size(), cap - 1));
}

bool owned_by(const DeviceSlot& s, const ProcessIdentity& who) {
  return s.state.load(std::memory_order_acquire) == format::kSlotTaken &&
         s.pid.load(std::memory_order_relaxed) == who.pid &&
         s.start_time.load(std::memory_order_relaxed) == who.start_time;
}

ProcessIdentity owner_of(const DeviceSlot& s) {
  return {s.pid.load(std::memory_order_relaxed), s.start_time.load(std::memory_order_relaxed)};
}

void free_slot(DeviceSlot& s) {
  s.state.store(format::kSlotFree, std::memory_order_release);
  s.charged.store(0, std::memory_order_relaxed);
  s.guarantee.store(0, std::memory_order_relaxed);
  s.claim_since_ns.store(0, std::memory_order_relaxed);
  s.claim_until_ns.store(0, std::memory_order_relaxed);
  s.claim_target.store(0, std::memory_order_relaxed);
}

bool taken(const DeviceSlot& s) {
  return s.state.load(std::memory_order_acquire) == format::kSlotTaken;
}

uint64_t below_guarantee(const DeviceSlot& s) {
  const uint64_t g = s.guarantee.load(std::memory_order_relaxed);
  const uint64_t c = s.charged.load(std::memory_order_relaxed);
  return g > c ? g - c : 0;
}

// What the slot's claim (live or not) still lacks: its target, at most the guarantee, less
// what it holds.
uint64_t claim_lacks(const DeviceSlot& s) {
  const uint64_t want = std::min(s.claim_target.load(std::memory_order_relaxed),
                                 s.guarantee.load(std::memory_order_relaxed));
  const uint64_t c = s.charged.load(std::memory_order_relaxed);
  return want > c ? want - c : 0;
}

std::string guarantee_error(const std::string& device, uint64_t others, uint64_t bytes,
                            uint64_t budget) {
  return "a guarantee of " + format_size(bytes) + " on device " + device + " would bring the " +
         "guarantees to " + format_size(others + bytes) + ", above its budget of " +
         format_size(budget) + "; lower a guarantee or raise the budget (`kvpager budget`)";
}

}  // namespace

DeviceBudget DeviceBudget::open_or_create(const RegistryConfig& config, const std::string& device,
                                          uint64_t total_bytes) {
  validate_registry_config(config);
  validate_device_label(device);
  if (total_bytes == 0) {
    throw InvalidArgument("device " + device + ": memory size 0");
  }
  const uint64_t budget = parse_budget(config.gpu_utilization, total_bytes);
  const std::string path = device_path(config, device);
  for (int attempt = 0; attempt < 3; ++attempt) {
    // Open the segment when it exists: creating writes a whole temporary segment first, which
    // needs room that a nearly full directory may lack even though the device is set up.
    try {
      DeviceBudget budget =
          from_file(device, ShmFile::open_mapped(path, sizeof(DeviceSegment), true));
      budget.set_claim_timing(config);
      return budget;
    } catch (const DriverError& e) {
      if (e.result().rfind("ENOENT", 0) != 0) {
        throw;
      }
    }
    auto created =
        ShmFile::create_published(path, sizeof(DeviceSegment), config.mode, [&](void* p) {
          auto* s = static_cast<DeviceSegment*>(p);
          std::memcpy(s->header.magic, format::kDeviceMagic, sizeof s->header.magic);
          s->header.version = format::kVersion;
          s->header.segment_bytes = sizeof(DeviceSegment);
          copy_string(s->device, sizeof s->device, device);
          s->total_bytes = total_bytes;
          s->budget_bytes.store(budget);
          s->max_slots = format::kMaxSlots;
          init_robust_mutex(&s->mutex);
        });
    if (created) {
      DeviceBudget budget(device, std::move(*created));
      budget.set_claim_timing(config);
      return budget;
    }
    // Another process published it first: open it on the next pass (or create it again if it
    // was removed meanwhile).
  }
  throw StateError("device segment " + path + " keeps disappearing while being opened");
}

DeviceBudget DeviceBudget::open_existing(const RegistryConfig& config, const std::string& device) {
  validate_registry_config(config);
  validate_device_label(device);
  const std::string path = device_path(config, device);
  try {
    DeviceBudget budget =
        from_file(device, ShmFile::open_mapped(path, sizeof(DeviceSegment), true));
    budget.set_claim_timing(config);
    return budget;
  } catch (const DriverError& e) {
    if (e.result().rfind("ENOENT", 0) == 0) {
      throw InvalidArgument("unknown device '" + device + "': no segment " + path);
    }
    throw;
  }
}

DeviceBudget DeviceBudget::from_file(const std::string& device, ShmFile file) {
  DeviceRecord record;
  std::string why;
  if (!decode_device(file.bytes(), &record, &why)) {
    throw StateError("device segment " + file.path() + " is unusable: " + why +
                     "; remove it once no kvpager process uses it");
  }
  if (record.device != device) {
    throw StateError("device segment " + file.path() + " names device '" + record.device + "'");
  }
  return DeviceBudget(device, std::move(file));
}

uint64_t DeviceBudget::charged_of(uint32_t slot) const {
  return segment().slots[slot].charged.load(std::memory_order_relaxed);
}

uint64_t DeviceBudget::guarantee_of(uint32_t slot) const {
  return segment().slots[slot].guarantee.load(std::memory_order_relaxed);
}

void DeviceBudget::set_claim_timing(const RegistryConfig& config) {
  claim_ttl_ns_ = static_cast<uint64_t>(config.claim_ttl.count()) * 1'000'000;
  claim_patience_ns_ = static_cast<uint64_t>(config.claim_patience.count()) * 1'000'000;
  lock_timeout_ = config.lock_timeout;
}

RobustLock DeviceBudget::lock(pid_t self) {
  DeviceSegment& s = segment();
  LockOptions options;
  options.timeout = lock_timeout_;
  options.self = self != 0 ? self : ::getpid();
  options.what = lock_name_;
  return RobustLock(&s.mutex, {&s.recoveries, &s.lock_holder_pid, &s.lock_held_since_ns}, options);
}

bool DeviceBudget::claim_live(const DeviceSlot& slot, uint64_t now) const {
  const uint64_t since = slot.claim_since_ns.load(std::memory_order_relaxed);
  return since != 0 && now < slot.claim_until_ns.load(std::memory_order_relaxed) &&
         now - std::min(now, since) < claim_patience_ns_ && claim_lacks(slot) > 0;
}

uint64_t DeviceBudget::guarantees_except(uint32_t slot) const {
  uint64_t sum = 0;
  for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
    if (i != slot && taken(segment().slots[i])) {
      sum += segment().slots[i].guarantee.load(std::memory_order_relaxed);
    }
  }
  return sum;
}

void DeviceBudget::require_guarantee_fits_locked(uint32_t slot, uint64_t bytes,
                                                 const ProcessIdentity& who) {
  for (int pass = 0;; ++pass) {
    const uint64_t others = guarantees_except(slot), budget = budget_bytes();
    if (bytes <= budget && others <= budget - bytes) {
      return;
    }
    if (pass > 0) {
      throw InvalidArgument(guarantee_error(device_, others, bytes, budget));
    }
    reclaim_dead_locked(&who, nullptr);  // dead members' guarantees go with them
  }
}

bool DeviceBudget::claim(uint32_t slot, const ProcessIdentity& who, uint64_t bytes) noexcept {
  DeviceSlot& mine = segment().slots[slot];
  if (!owned_by(mine, who) || below_guarantee(mine) == 0) {
    return false;
  }
  const uint64_t now = monotonic_ns();
  const uint64_t charged = mine.charged.load(std::memory_order_relaxed);
  const uint64_t target =
      bytes == 0 || bytes > format::kUnlimited - charged ? format::kUnlimited : charged + bytes;
  // A claim that lapsed (or none) starts over: patience counts from now, and it asks for this
  // need alone. So does one whose patience ran out a patience ago (the borrower had that long
  // to finish what needed it). A live claim asks for the larger of the two needs.
  uint64_t since = mine.claim_since_ns.load(std::memory_order_relaxed);
  const bool live = since != 0 && now < mine.claim_until_ns.load(std::memory_order_relaxed);
  const bool rested = since != 0 && now - std::min(now, since) >= 2 * claim_patience_ns_;
  if (!live || rested) {
    mine.claim_target.store(target, std::memory_order_relaxed);
    mine.claim_since_ns.compare_exchange_strong(since, now, std::memory_order_relaxed);
  } else {
    uint64_t asked = mine.claim_target.load(std::memory_order_relaxed);
    while (asked < target &&
           !mine.claim_target.compare_exchange_weak(asked, target, std::memory_order_relaxed)) {
    }
  }
  mine.claim_until_ns.store(now + claim_ttl_ns_, std::memory_order_relaxed);
  return true;
}

uint64_t DeviceBudget::claimed_by_others(uint32_t slot) const {
  const uint64_t now = monotonic_ns();
  uint64_t claimed = 0;
  for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
    const DeviceSlot& other = segment().slots[i];
    if (i != slot && taken(other) && claim_live(other, now)) {
      claimed += claim_lacks(other);
    }
  }
  return claimed;
}

uint64_t DeviceBudget::owed_by(uint32_t slot) const {
  // The shares are guarantee_shares.hpp's; the early returns only skip scanning the slots.
  const DeviceSlot& mine = segment().slots[slot];
  const uint64_t charged = mine.charged.load(std::memory_order_relaxed);
  const uint64_t guarantee = mine.guarantee.load(std::memory_order_relaxed);
  const uint64_t borrowed = charged > guarantee ? charged - guarantee : 0;
  if (borrowed == 0) {
    return 0;
  }
  const uint64_t claimed = claimed_by_others(slot);
  if (claimed == 0) {
    return 0;
  }
  const uint64_t free = DeviceTotals{budget_bytes(), charged_total()}.free_bytes();
  if (claimed <= free) {
    return 0;
  }
  uint64_t borrowed_total = 0;
  for (const DeviceSlot& s : segment().slots) {
    if (taken(s)) {
      const uint64_t c = s.charged.load(std::memory_order_relaxed);
      const uint64_t g = s.guarantee.load(std::memory_order_relaxed);
      borrowed_total += c > g ? c - g : 0;
    }
  }
  return owed_share(borrowed, claimed - free, borrowed_total);
}

uint64_t DeviceBudget::charged_total() const {
  const DeviceSegment& s = segment();
  uint64_t total = 0;
  for (const DeviceSlot& slot : s.slots) {
    if (slot.state.load(std::memory_order_acquire) == format::kSlotTaken) {
      total += slot.charged.load(std::memory_order_relaxed);
    }
  }
  return total;
}

uint64_t DeviceBudget::raise_pressure() noexcept {
  return segment().pressure.fetch_add(1, std::memory_order_acq_rel) + 1;
}

uint32_t DeviceBudget::join(const std::string& name, const ProcessIdentity& who,
                            uint64_t guarantee_bytes) {
  validate_instance_name(name);
  DeviceSegment& s = segment();
  const RobustLock held = lock(who.pid);
  for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
    DeviceSlot& slot = s.slots[i];
    if (slot.state.load(std::memory_order_acquire) != format::kSlotTaken) {
      continue;
    }
    if (std::strncmp(slot.name, name.c_str(), sizeof slot.name) != 0) {
      continue;
    }
    const ProcessIdentity owner = owner_of(slot);
    if (is_alive(owner)) {
      throw StateError("instance name '" + name + "' is in use on device " + device_ + " by pid " +
                       std::to_string(owner.pid));
    }
    free_slot(slot);
  }
  if (guarantee_bytes > 0) {
    require_guarantee_fits_locked(format::kMaxSlots, guarantee_bytes, who);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
      DeviceSlot& slot = s.slots[i];
      if (slot.state.load(std::memory_order_acquire) != format::kSlotFree) {
        continue;
      }
      copy_string(slot.name, sizeof slot.name, name);
      slot.pid.store(who.pid, std::memory_order_relaxed);
      slot.start_time.store(who.start_time, std::memory_order_relaxed);
      slot.charged.store(0, std::memory_order_relaxed);
      slot.guarantee.store(guarantee_bytes, std::memory_order_relaxed);
      slot.claim_since_ns.store(0, std::memory_order_relaxed);
      slot.claim_until_ns.store(0, std::memory_order_relaxed);
      slot.claim_target.store(0, std::memory_order_relaxed);
      slot.state.store(format::kSlotTaken, std::memory_order_release);
      return i;
    }
    if (pass == 0) {
      reclaim_dead_locked(&who, nullptr);  // every slot taken: free the dead ones
    }
  }
  throw OutOfMemory("device " + device_ + " already has " + std::to_string(format::kMaxSlots) +
                    " instances; run `kvpager gc` or stop one");
}

void DeviceBudget::leave(uint32_t slot, const ProcessIdentity& who) noexcept {
  if (slot >= format::kMaxSlots) {
    return;
  }
  DeviceSegment& s = segment();
  try {
    const RobustLock held = lock(who.pid);
    if (owned_by(s.slots[slot], who)) {
      free_slot(s.slots[slot]);
    }
  } catch (...) {  // a lock that cannot be taken: the slot stays until gc reclaims it
  }
}

void DeviceBudget::set_guarantee(uint32_t slot, const ProcessIdentity& who, uint64_t bytes) {
  DeviceSegment& s = segment();
  const RobustLock held = lock();
  DeviceSlot& mine = s.slots[slot];
  if (!owned_by(mine, who)) {
    throw StateError("registry slot " + std::to_string(slot) + " on device " + device_ +
                     " is no longer held by pid " + std::to_string(who.pid));
  }
  require_guarantee_fits_locked(slot, bytes, who);
  mine.guarantee.store(bytes, std::memory_order_relaxed);
}

ChargeResult DeviceBudget::try_charge(uint32_t slot, const ProcessIdentity& who, uint64_t bytes,
                                      uint64_t instance_limit, std::atomic<uint64_t>* own_raises) {
  DeviceSegment& s = segment();
  const RobustLock held = lock(who.pid);
  DeviceSlot& mine = s.slots[slot];
  if (!owned_by(mine, who)) {
    throw StateError("registry slot of this instance on device " + device_ +
                     " was taken away (removed by gc or delete --force?)");
  }
  const uint64_t current = mine.charged.load(std::memory_order_relaxed);
  if (bytes > instance_limit || current > instance_limit - bytes) {
    return ChargeResult::kInstanceLimit;
  }
  const uint64_t budget = s.budget_bytes.load(std::memory_order_acquire);
  for (int pass = 0; pass < 2; ++pass) {
    // Charges grow under the lock only; a lock-free uncharge meanwhile can only make it high.
    // Claims are renewed lock-free: one that starts meanwhile counts from the next charge.
    const uint64_t sum = charged_total();
    const uint64_t kept = claimed_by_others(slot);
    const uint64_t room = budget > sum ? budget - sum : 0;
    if (bytes <= room && kept <= room - bytes) {
      mine.charged.fetch_add(bytes, std::memory_order_relaxed);
      if (mine.claim_since_ns.load(std::memory_order_relaxed) != 0) {
        // Memory came: patience starts over while the claim still lacks some, else it ends.
        const uint64_t now = monotonic_ns();
        const bool lacks =
            claim_lacks(mine) > 0 && now < mine.claim_until_ns.load(std::memory_order_relaxed);
        mine.claim_since_ns.store(lacks ? now : 0, std::memory_order_relaxed);
      }
      return ChargeResult::kCharged;
    }
    if (pass == 0 && reclaim_dead_locked(&who, nullptr) == 0) {
      break;
    }
  }
  claim(slot, who, bytes);
  if (own_raises) {
    own_raises->fetch_add(1, std::memory_order_acq_rel);  // before the raise others can see
  }
  raise_pressure();
  return ChargeResult::kDeviceBudget;
}

uint64_t DeviceBudget::uncharge(uint32_t slot, uint64_t bytes) noexcept {
  std::atomic<uint64_t>& charged = segment().slots[slot].charged;
  uint64_t current = charged.load(std::memory_order_relaxed);
  uint64_t take = 0;
  do {
    take = std::min(current, bytes);
  } while (!charged.compare_exchange_weak(current, current - take, std::memory_order_acq_rel));
  return take;
}

uint64_t DeviceBudget::reclaim_dead_locked(const ProcessIdentity* except,
                                           std::vector<DeviceSlotRecord>* out) {
  uint64_t reclaimed = 0;
  for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
    DeviceSlot& slot = segment().slots[i];
    if (slot.state.load(std::memory_order_acquire) != format::kSlotTaken) {
      continue;
    }
    const ProcessIdentity owner = owner_of(slot);
    if (except && owner.pid == except->pid) {
      continue;
    }
    if (is_alive(owner)) {
      continue;
    }
    const uint64_t charged = slot.charged.load(std::memory_order_relaxed);
    if (out) {
      DeviceSlotRecord r;
      r.index = i;
      r.name.assign(slot.name, strnlen(slot.name, sizeof slot.name));
      r.owner = owner;
      r.charged_bytes = charged;
      out->push_back(std::move(r));
    }
    reclaimed += charged;
    free_slot(slot);
  }
  return reclaimed;
}

uint64_t DeviceBudget::reclaim_dead(std::vector<DeviceSlotRecord>* reclaimed) {
  const RobustLock held = lock();
  return reclaim_dead_locked(nullptr, reclaimed);
}

uint64_t DeviceBudget::release_member(const std::string& name, const ProcessIdentity& who) {
  DeviceSegment& s = segment();
  const RobustLock held = lock();
  for (DeviceSlot& slot : s.slots) {
    if (owned_by(slot, who) && std::strncmp(slot.name, name.c_str(), sizeof slot.name) == 0) {
      const uint64_t charged = slot.charged.load(std::memory_order_relaxed);
      free_slot(slot);
      return charged;
    }
  }
  return 0;
}

void DeviceBudget::set_budget(uint64_t bytes) {
  if (bytes == 0) {
    throw InvalidArgument("device budget must be above 0 bytes");
  }
  DeviceSegment& s = segment();
  const RobustLock held = lock();
  uint64_t guarantees = guarantees_except(format::kMaxSlots);
  if (bytes < guarantees) {
    reclaim_dead_locked(nullptr, nullptr);  // dead members' guarantees go with them
    guarantees = guarantees_except(format::kMaxSlots);
  }
  if (bytes < guarantees) {
    throw InvalidArgument("a budget of " + format_size(bytes) + " on device " + device_ +
                          " is below its instances' guarantees (" + format_size(guarantees) +
                          " in all); lower them first (`kvpager guarantee NAME SIZE`)");
  }
  s.budget_bytes.store(bytes, std::memory_order_release);
  s.budget_revision.fetch_add(1, std::memory_order_acq_rel);
}

uint64_t DeviceBudget::pool_share(uint32_t slot, const ProcessIdentity& who, uint64_t share,
                                  uint64_t default_bytes) {
  if (share == 0) {
    throw InvalidArgument("a budget share must be above 0 bytes");
  }
  if (slot >= format::kMaxSlots) {
    throw InvalidArgument("no device slot " + std::to_string(slot));
  }
  DeviceSegment& s = segment();
  const RobustLock held = lock(who.pid);
  if (!owned_by(s.slots[slot], who)) {
    throw StateError("device " + device_ + ": slot " + std::to_string(slot) +
                     " is no longer this instance's; it cannot pool a budget share");
  }
  reclaim_dead_locked(&who, nullptr);
  uint32_t live = 0;
  for (const DeviceSlot& other : s.slots) {
    live += other.state.load(std::memory_order_acquire) == format::kSlotTaken ? 1 : 0;
  }
  const uint64_t before = s.budget_bytes.load(std::memory_order_acquire);
  uint64_t after =
      live <= 1 || before == default_bytes ? share : before + std::min(share, UINT64_MAX - before);
  after = std::max(after, guarantees_except(format::kMaxSlots));
  s.budget_bytes.store(after, std::memory_order_release);
  s.budget_revision.fetch_add(1, std::memory_order_acq_rel);
  return after;
}

uint64_t DeviceBudget::unpool_share(uint32_t slot, const ProcessIdentity& who,
                                    uint64_t share) noexcept {
  try {
    DeviceSegment& s = segment();
    const RobustLock held = lock();
    DeviceSlot& mine = s.slots[slot];
    if (!owned_by(mine, who)) {
      return s.budget_bytes.load(std::memory_order_acquire);
    }
    mine.guarantee.store(0, std::memory_order_relaxed);  // it lived in the share leaving now
    const uint64_t before = s.budget_bytes.load(std::memory_order_acquire);
    const uint64_t floor = std::max<uint64_t>(1, guarantees_except(format::kMaxSlots));
    const uint64_t after = before > share && before - share > floor ? before - share : floor;
    s.budget_bytes.store(std::min(before, after), std::memory_order_release);
    s.budget_revision.fetch_add(1, std::memory_order_acq_rel);
    return std::min(before, after);
  } catch (...) {
    return budget_bytes();  // a lock that cannot be taken: leave the budget as it is
  }
}

DeviceRecord DeviceBudget::snapshot_locked() {
  const RobustLock held = lock();
  DeviceRecord r;
  std::string why;
  if (!decode_device(file_.bytes(), &r, &why)) {
    throw StateError("device segment " + path() + " became unusable: " + why);
  }
  return r;
}

}  // namespace kvpager::limits

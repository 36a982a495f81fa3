#include "kvpager/limits/segment_decoder.hpp"

#include <cstring>

#include "kvpager/limits/registry_config.hpp"
#include "kvpager/limits/segment_format.hpp"

namespace kvpager::limits {

namespace {

using namespace format;

bool fail(std::string* why, std::string reason) {
  *why = std::move(reason);
  return false;
}

// Checks the common header; on success the bytes hold exactly one `Segment`.
template <class Segment>
bool check_header(std::span<const std::byte> bytes, const char (&magic)[8], const char* kind,
                  std::string* why) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(Segment) != 0) {
    return fail(why, "internal: unaligned buffer");
  }
  if (bytes.size() < sizeof(SegmentHeader)) {
    return fail(why, "truncated: " + std::to_string(bytes.size()) + " bytes");
  }
  SegmentHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (std::memcmp(h.magic, magic, sizeof h.magic) != 0) {
    return fail(why, std::string("not a kvpager ") + kind + " segment (bad magic)");
  }
  if (h.version != kVersion) {
    return fail(why, "format version " + std::to_string(h.version) + " (this kvpager reads " +
                         std::to_string(kVersion) + ")");
  }
  if (h.segment_bytes != sizeof(Segment)) {
    return fail(why, "header gives " + std::to_string(h.segment_bytes) + " bytes, version " +
                         std::to_string(kVersion) + " has " + std::to_string(sizeof(Segment)));
  }
  if (bytes.size() != sizeof(Segment)) {
    return fail(why, (bytes.size() < sizeof(Segment) ? "truncated: " : "oversized: ") +
                         std::to_string(bytes.size()) + " bytes, expected " +
                         std::to_string(sizeof(Segment)));
  }
  return true;
}

// A NUL-terminated string inside `field`, or false.
template <size_t N>
bool bounded_string(const char (&field)[N], std::string* out) {
  const void* nul = std::memchr(field, '\0', N);
  if (!nul) return false;
  out->assign(field, static_cast<const char*>(nul));
  return true;
}

}  // namespace

bool decode_instance(std::span<const std::byte> bytes, InstanceRecord* out,
                     std::string* why) noexcept {
  try {
    if (!check_header<InstanceSegment>(bytes, kInstanceMagic, "instance", why)) return false;
    const auto* s = reinterpret_cast<const InstanceSegment*>(bytes.data());
    InstanceRecord r;
    if (!bounded_string(s->name, &r.name) || !is_valid_instance_name(r.name)) {
      return fail(why, "corrupt: invalid instance name");
    }
    if (!bounded_string(s->model, &r.model)) return fail(why, "corrupt: unterminated model name");
    for (char c : r.model) {
      if (c < 0x20 || c > 0x7e) return fail(why, "corrupt: non-printable model name");
    }
    if (!bounded_string(s->device, &r.device) || !is_valid_device_label(r.device)) {
      return fail(why, "corrupt: invalid device label");
    }
    if (s->pid <= 0) return fail(why, "corrupt: pid " + std::to_string(s->pid));
    if (s->slot >= kMaxSlots) return fail(why, "corrupt: slot " + std::to_string(s->slot));
    r.owner = {s->pid, s->start_time};
    r.slot = s->slot;
    r.created_unix_ms = s->created_unix_ms;
    r.limit_bytes = s->limit_bytes.load(std::memory_order_acquire);
    r.revision = s->revision.load(std::memory_order_acquire);
    r.mapped_bytes = s->mapped_bytes.load(std::memory_order_relaxed);
    r.used_bytes = s->used_bytes.load(std::memory_order_relaxed);
    r.reserved_bytes = s->reserved_bytes.load(std::memory_order_relaxed);
    r.heartbeat_ns = s->heartbeat_ns.load(std::memory_order_relaxed);
    r.evicted_blocks = s->evicted_blocks.load(std::memory_order_relaxed);
    *out = std::move(r);
    return true;
  } catch (...) {  // std::bad_alloc from a string: report, never propagate
    return fail(why, "out of memory while decoding");
  }
}

bool decode_device(std::span<const std::byte> bytes, DeviceRecord* out, std::string* why) noexcept {
  try {
    if (!check_header<DeviceSegment>(bytes, kDeviceMagic, "device", why)) return false;
    const auto* s = reinterpret_cast<const DeviceSegment*>(bytes.data());
    DeviceRecord r;
    if (!bounded_string(s->device, &r.device) || !is_valid_device_label(r.device)) {
      return fail(why, "corrupt: invalid device label");
    }
    if (s->max_slots != kMaxSlots)
      return fail(why, "corrupt: slot count " + std::to_string(s->max_slots));
    if (s->total_bytes == 0) return fail(why, "corrupt: device memory size 0");
    r.total_bytes = s->total_bytes;
    r.budget_bytes = s->budget_bytes.load(std::memory_order_acquire);
    r.budget_revision = s->budget_revision.load(std::memory_order_acquire);
    r.pressure = s->pressure.load(std::memory_order_relaxed);
    r.recoveries = s->recoveries.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < kMaxSlots; ++i) {
      const DeviceSlot& slot = s->slots[i];
      const uint32_t state = slot.state.load(std::memory_order_acquire);
      if (state == kSlotFree) continue;
      if (state != kSlotTaken) return fail(why, "corrupt: slot " + std::to_string(i) + " state");
      DeviceSlotRecord m;
      m.index = i;
      if (!bounded_string(slot.name, &m.name) || !is_valid_instance_name(m.name)) {
        return fail(why, "corrupt: slot " + std::to_string(i) + " name");
      }
      m.owner = {slot.pid.load(std::memory_order_relaxed),
                 slot.start_time.load(std::memory_order_relaxed)};
      if (m.owner.pid <= 0) return fail(why, "corrupt: slot " + std::to_string(i) + " pid");
      m.charged_bytes = slot.charged.load(std::memory_order_relaxed);
      if (m.charged_bytes > kUnlimited - r.charged_bytes) {
        return fail(why, "corrupt: slot charges overflow");
      }
      r.charged_bytes += m.charged_bytes;
      m.guarantee_bytes = slot.guarantee.load(std::memory_order_relaxed);
      m.claim_since_ns = slot.claim_since_ns.load(std::memory_order_relaxed);
      m.claim_until_ns = slot.claim_until_ns.load(std::memory_order_relaxed);
      m.claim_target_bytes = slot.claim_target.load(std::memory_order_relaxed);
      r.members.push_back(std::move(m));
    }
    *out = std::move(r);
    return true;
  } catch (...) {
    return fail(why, "out of memory while decoding");
  }
}

}  // namespace kvpager::limits

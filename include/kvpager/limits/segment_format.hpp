#pragma once
// The binary format of the registry segments under /dev/shm, one file each (version: kVersion).
//
//   <prefix>inst-<name>   one per KvCache instance (model process or TP group): identity,
//                         the limit others may set, and what the instance publishes.
//   <prefix>dev-<device>  one per device: the budget, the robust process-shared mutex that
//                         serialises charges, and one slot per member instance holding its
//                         charge (the authoritative accounting; the instance copies it).
//
// Both start with an 8-byte magic, the format version and the segment's size in bytes, so a
// reader can refuse a truncated, foreign or other-version file before reading anything else.
// Fields that change while the segment is live are lock-free 64/32-bit atomics; fixed fields
// are written once, before the file is published under its final name (link(2)), and never
// again. Strings are NUL-terminated within their arrays. The layout is for one ABI (x86-64 or
// aarch64 Linux, glibc): processes of one machine share it, nothing else reads it.
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace kvpager::limits::format {

// 2: slots carry a guarantee and a claim; 3: claims are sized; 4: the lock's holder is recorded
// and instances count blocks evicted under pressure
constexpr uint32_t kVersion = 4;
constexpr char kInstanceMagic[8] = {'K', 'V', 'P', 'G', 'I', 'N', 'S', 'T'};
constexpr char kDeviceMagic[8] = {'K', 'V', 'P', 'G', 'D', 'E', 'V', 'S'};
constexpr size_t kNameBytes = 64;    // instance and model names: at most 63 characters
constexpr size_t kDeviceBytes = 32;  // device labels ("cuda0", "host0"): at most 31
constexpr uint32_t kMaxSlots = 64;   // instances per device
constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct SegmentHeader {
  char magic[8];
  uint32_t version;
  uint32_t segment_bytes;  // sizeof the whole segment struct
};

struct InstanceSegment {
  SegmentHeader header;
  char name[kNameBytes];
  char model[kNameBytes];
  char device[kDeviceBytes];
  int32_t pid;
  uint32_t slot;        // index into the device segment's slots
  uint64_t start_time;  // /proc/<pid>/stat field 22: tells a reused pid apart
  uint64_t created_unix_ms;
  std::atomic<uint64_t> limit_bytes;     // kUnlimited: only the device budget bounds it
  std::atomic<uint64_t> revision;        // bumped after every limit change
  std::atomic<uint64_t> mapped_bytes;    // physical bytes held (copy of the device slot charge)
  std::atomic<uint64_t> used_bytes;      // bytes of pages holding blocks in use
  std::atomic<uint64_t> reserved_bytes;  // held but not in use: free mapped pages, ready handles
  std::atomic<uint64_t> heartbeat_ns;    // CLOCK_MONOTONIC of the owner's last poll
  // Cached blocks (kept for reuse, e.g. a serving engine's prefix cache) the owner gave up under
  // pressure: a monotonic count the engine reports (InstanceRegistration::count_evicted_blocks).
  std::atomic<uint64_t> evicted_blocks;
};

enum SlotState : uint32_t { kSlotFree = 0, kSlotTaken = 1 };

struct DeviceSlot {
  std::atomic<uint32_t> state;  // SlotState; the other fields are valid while taken
  std::atomic<int32_t> pid;
  std::atomic<uint64_t> start_time;
  char name[kNameBytes];
  std::atomic<uint64_t> charged;  // physical bytes the instance holds on the device
  // Guaranteed share: while the instance holds less and waits for memory (a claim), the others
  // may not charge into the difference, and those above their own guarantee give memory back.
  std::atomic<uint64_t> guarantee;
  // The claim: CLOCK_MONOTONIC ns. since = 0: none; otherwise when the instance began waiting
  // (or last got memory while waiting); until: the claim lapses then unless renewed.
  std::atomic<uint64_t> claim_since_ns;
  std::atomic<uint64_t> claim_until_ns;
  // The charge the claim asks to reach (kUnlimited: the whole guarantee). What it keeps from the
  // others is min(target, guarantee) - charged: what the instance waits for, not more.
  std::atomic<uint64_t> claim_target;
};

struct DeviceSegment {
  SegmentHeader header;
  char device[kDeviceBytes];
  uint64_t total_bytes;                // device memory, as the creating process saw it
  std::atomic<uint64_t> budget_bytes;  // bound on the sum of the slots' charges
  std::atomic<uint64_t> budget_revision;
  std::atomic<uint64_t> pressure;    // bumped when a charge is refused by the budget
  std::atomic<uint64_t> recoveries;  // locks recovered from a dead owner (EOWNERDEAD)
  // Who holds the mutex, written by the holder after taking it and cleared before letting go,
  // so that a waiter that gives up can say who and since when: pid (0: nobody) and
  // CLOCK_MONOTONIC ns.
  std::atomic<uint64_t> lock_held_since_ns;
  uint32_t max_slots;  // kMaxSlots
  std::atomic<int32_t> lock_holder_pid;
  pthread_mutex_t mutex;  // robust, process-shared; guards slot changes
  DeviceSlot slots[kMaxSlots];
};

}  // namespace kvpager::limits::format

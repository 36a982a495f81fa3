// Compiled (never linked) by nodiscard_check.cmake with -DCASE=0..7 and -Werror=unused-result:
// case 0 uses every result and must compile; each other case drops one result that must be
// checked (a refused charge or allocation, a claimed page, a decode that failed) and must not.
// MemoryBudget::try_charge is [[nodiscard]] too, but GCC 12 does not diagnose a virtual call
// through the base, so the cases call the final classes.
#include <span>
#include <string>

#include "kvpager/kv/block_allocator.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/memory_budget.hpp"
#include "kvpager/limits/segment_decoder.hpp"
#include "kvpager/limits/shm_file.hpp"

using namespace kvpager;

bool uses(limits::LocalBudget& local, limits::InstanceRegistration& instance,
          limits::DeviceBudget& device, const limits::ProcessIdentity& who,
          kv::BlockAllocator& blocks, std::span<BlockId> out, std::span<const std::byte> bytes,
          limits::InstanceRecord* irec, limits::DeviceRecord* drec, std::string* why) {
#if CASE == 0
  return local.try_charge(1) && instance.try_charge(1) &&
         device.try_charge(0, who, 1, 2) == limits::ChargeResult::kCharged &&
         blocks.try_alloc(1, out) && blocks.claim_unmapped_page() && blocks.claim_free_page() &&
         limits::decode_instance(bytes, irec, why) && limits::decode_device(bytes, drec, why) &&
         limits::read_file_copy("f", 1, why);
#elif CASE == 1
  local.try_charge(1);
#elif CASE == 2
  instance.try_charge(1);
#elif CASE == 3
  device.try_charge(0, who, 1, 2);
#elif CASE == 4
  blocks.try_alloc(1, out);
#elif CASE == 5
  blocks.claim_free_page();
#elif CASE == 6
  limits::decode_instance(bytes, irec, why);
#elif CASE == 7
  limits::read_file_copy("f", 1, why);
#endif
  return true;
}

#include "kvpager/limits/guarantee_shares.hpp"

#include <algorithm>

namespace kvpager::limits {

uint64_t owed_share(uint64_t borrowed, uint64_t shortfall, uint64_t borrowed_total) noexcept {
  if (borrowed == 0 || shortfall == 0) {
    return 0;
  }
  // Split among the borrowers by what each borrows (rounded up), so two borrowers do not both
  // give back all of it.
  const uint64_t total = std::max(borrowed_total, borrowed);
  const auto share = static_cast<uint64_t>(
      (static_cast<unsigned __int128>(shortfall) * borrowed + total - 1) / total);
  return std::min(borrowed, share);
}

uint64_t excess_of(uint64_t charged, uint64_t instance_limit, uint64_t guarantee,
                   const DeviceTotals& device) noexcept {
  uint64_t excess = charged > instance_limit ? charged - instance_limit : 0;
  if (device.charged_bytes > device.budget_bytes && charged > guarantee) {
    excess =
        std::max(excess, std::min(charged - guarantee, device.charged_bytes - device.budget_bytes));
  }
  return excess;
}

uint64_t headroom_of(uint64_t charged, uint64_t instance_limit, uint64_t claimed_by_others,
                     const DeviceTotals& device) noexcept {
  const uint64_t free = device.free_bytes();
  return std::min(instance_limit > charged ? instance_limit - charged : 0,
                  free > claimed_by_others ? free - claimed_by_others : 0);
}

}  // namespace kvpager::limits

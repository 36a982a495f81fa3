#include "kvpager/limits/memory_budget.hpp"

namespace kvpager::limits {

bool LocalBudget::try_charge(uint64_t bytes) {
  uint64_t current = charged_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_bytes() || current > limit_bytes() - bytes) return false;
  } while (!charged_.compare_exchange_weak(current, current + bytes, std::memory_order_acq_rel));
  return true;
}

void LocalBudget::uncharge(uint64_t bytes) {
  charged_.fetch_sub(bytes, std::memory_order_acq_rel);
}

}  // namespace kvpager::limits

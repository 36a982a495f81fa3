#include "kvbench/kvbench_buffer_size.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "kvpager/common/error.hpp"

namespace kvpager::cli {

namespace {

uint64_t checked_mul(uint64_t a, uint64_t b) {
  uint64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw InvalidArgument(
        "the plan's buffer (max_block_size x max_batch_size x devices x "
        "threads) overflows 64 bits");
  }
  return out;
}

uint64_t batch_bytes(const transfer::XferConfig& c) {
  return checked_mul(c.max_block_size, c.max_batch_size);
}

}  // namespace

uint64_t planned_buffer_size(const transfer::XferConfig& c) {
  const uint64_t devices = std::max(c.num_initiator_dev, c.num_target_dev);
  const uint64_t base = checked_mul(checked_mul(batch_bytes(c), devices), c.num_threads);
  const uint64_t multiple = std::lcm(checked_mul(c.num_initiator_dev, c.num_threads),
                                     checked_mul(c.num_target_dev, c.num_threads));
  const uint64_t rest = base % multiple;
  if (rest == 0) return base;
  uint64_t out = 0;
  if (__builtin_add_overflow(base, multiple - rest, &out)) {
    throw InvalidArgument("the plan's buffer overflows 64 bits");
  }
  return out;
}

bool nixlbench_accepts_buffer(const transfer::XferConfig& c) {
  const uint64_t need = batch_bytes(c);
  const uint64_t total = c.total_buffer_size;
  return need <= total / c.num_initiator_dev && need <= total / c.num_target_dev &&
         need <= total / c.num_threads &&
         total % checked_mul(c.num_initiator_dev, c.num_threads) == 0 &&
         total % checked_mul(c.num_target_dev, c.num_threads) == 0;
}

void size_buffer_to_plan(transfer::XferConfig& plan, bool user_set) {
  const uint64_t planned = planned_buffer_size(plan);
  if (!user_set) {
    plan.total_buffer_size = planned;
    return;
  }
  if (nixlbench_accepts_buffer(plan)) return;
  const uint64_t multiple =
      std::lcm(plan.num_initiator_dev * plan.num_threads, plan.num_target_dev * plan.num_threads);
  throw InvalidArgument(
      "--total_buffer_size " + std::to_string(plan.total_buffer_size) +
      ": nixlbench refuses it for this plan (a batch of " + std::to_string(plan.max_batch_size) +
      " blocks of " + std::to_string(plan.max_block_size) + " B, " +
      std::to_string(plan.num_initiator_dev) + " initiator and " +
      std::to_string(plan.num_target_dev) + " target devices, " + std::to_string(plan.num_threads) +
      " threads); give " + std::to_string(planned) +
      (multiple > 1 ? " or a larger multiple of " + std::to_string(multiple) : " or more") +
      ", or leave it out to get " + std::to_string(planned));
}

}  // namespace kvpager::cli

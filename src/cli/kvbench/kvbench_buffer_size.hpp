#pragma once
// nixlbench's --total_buffer_size for a plan. nixlbench refuses to start when a batch does not
// fit its buffer: it checks max_block_size x max_batch_size against total_buffer_size divided
// by num_initiator_dev, by num_target_dev and by num_threads, and wants the total divisible by
// num_initiator_dev x num_threads and num_target_dev x num_threads. The 8 GiB default holds
// few plans (DeepSeek-R1 block, pp 32, 100 requests: 119141 x 294912 B = 35 GB), so `plan`
// sizes the buffer to the plan instead, as NIXL KVBench does (NIXLBench.configure_buffer_size).
#include <cstdint>

#include "kvpager/bench/transfer/xfer_config.hpp"

namespace kvpager::cli {

// The smallest total_buffer_size nixlbench accepts for `plan`'s blocks, batch, devices and
// threads: max_block_size x max_batch_size x max(initiator, target devices) x threads, rounded
// up to both divisibility rules. With one device a side and one thread it is block x batch.
// Throws InvalidArgument when it does not fit 64 bits.
uint64_t planned_buffer_size(const transfer::XferConfig& plan);

// Whether nixlbench's checks pass for plan.total_buffer_size as it is.
bool nixlbench_accepts_buffer(const transfer::XferConfig& plan);

// Sets plan.total_buffer_size to planned_buffer_size(plan) unless the user set it
// (`user_set`); a user's value that nixlbench would refuse throws InvalidArgument naming
// --total_buffer_size, the batch and the smallest size that fits.
void size_buffer_to_plan(transfer::XferConfig& plan, bool user_set);

}  // namespace kvpager::cli

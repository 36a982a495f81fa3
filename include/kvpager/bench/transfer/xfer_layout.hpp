#pragma once
// Where each block of a transfer batch lives, for every scheme, and the byte pattern that
// --check_consistency verifies. Every rank computes the same layout from the same XferConfig,
// so a target can verify what it received without being told. Pure functions; thread-safe.
//
// A world has I initiator ranks (0..I-1) and T target ranks (I..I+T-1). A flow moves a batch
// from one initiator region to one target region:
//   pairwise   initiator r -> target r            (I == T)
//   manytoone  initiator r -> target 0, region r  (T == 1)
//   onetomany  initiator 0 -> every target        (I == 1; each target gets the same blocks)
//   tp         initiator 0, region t -> target t  (I == 1; each target gets its own shard)
// Block i of a flow sits at region_base + (i mod slots) x block_size on both sides, where a
// region holds `region_bytes` (a ring of KV pages when the batch is larger than the buffer).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvpager/bench/transfer/xfer_config.hpp"

namespace kvpager::transfer {

struct Flow {
  uint32_t initiator = 0;       // rank
  uint32_t target = 0;          // rank
  uint64_t initiator_base = 0;  // byte offset of the region in the initiator's buffer
  uint64_t target_base = 0;     // byte offset of the region in the target's buffer
};

struct XferLayout {
  uint32_t initiators = 1;
  uint32_t targets = 1;
  uint64_t region_bytes = 0;  // per region, a multiple of 4096 and >= max_block_size
  uint32_t initiator_regions = 1;
  uint32_t target_regions = 1;
  std::vector<Flow> flows;

  uint32_t world_size() const { return initiators + targets; }
  bool is_initiator(uint32_t rank) const { return rank < initiators; }
  uint64_t initiator_buffer_bytes() const { return region_bytes * initiator_regions; }
  uint64_t target_buffer_bytes() const { return region_bytes * target_regions; }
  std::vector<Flow> flows_of(uint32_t rank) const;  // flows this rank takes part in
  // Offset of block `index` inside a region for `block_size`.
  uint64_t slot_offset(uint64_t index, uint64_t block_size) const {
    return (index % (region_bytes / block_size)) * block_size;
  }
};

// Throws InvalidArgument when the config cannot be laid out (validate() first).
XferLayout make_layout(const XferConfig& config);

// The block sizes and batch sizes of the sweep: start, doubling, up to max (max always last).
std::vector<uint64_t> sweep(uint64_t start, uint64_t max);

// pattern byte for (seed, offset): cheap, position-dependent, never constant over a block.
void fill_pattern(std::byte* data, uint64_t bytes, uint64_t buffer_offset, uint64_t seed);
// Number of bytes in [data, data+bytes) that differ from the pattern.
uint64_t count_mismatches(const std::byte* data, uint64_t bytes, uint64_t buffer_offset,
                          uint64_t seed);
// The seed an initiator (or, for READ, a target) fills its buffer with for one sweep row.
uint64_t pattern_seed(uint32_t rank, uint32_t row);

}  // namespace kvpager::transfer

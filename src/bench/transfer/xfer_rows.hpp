#pragma once
// The benchmark loop shared by every engine (internal to the transfer engine): the rows of the
// sweep, the block ops of one initiator for a row, split over threads, and the timed run.
#include <cstdint>
#include <memory>
#include <vector>

#include "kvpager/bench/transfer/segment.hpp"
#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"

namespace kvpager::transfer::detail {

struct RowPlan {
  uint32_t index = 0;
  uint64_t block = 0;
  uint64_t batch = 0;
};

std::vector<RowPlan> rows_of(const XferConfig& config);

// ops[thread] for `initiator` (a rank); BlockOp::peer is the target index (rank - initiators).
std::vector<std::vector<BlockOp>> ops_for(const XferLayout& layout, uint32_t initiator,
                                          const RowPlan& row, uint32_t threads);

// Slots of a region the row touches: min(batch, region / block) blocks from offset 0.
uint64_t used_bytes(const XferLayout& layout, const RowPlan& row);

// prepare(ops), warm-up, then `iterations` timed passes; each pass posts a thread's ops
// (post_all) and waits for them.
// Threads start the timed part together. Returns the wall seconds of the timed part.
// Rethrows the first error of any thread.
double run_iterations(std::vector<std::unique_ptr<BlockMover>>& movers,
                      const std::vector<std::vector<BlockOp>>& ops, uint64_t warmup,
                      uint64_t iterations);

}  // namespace kvpager::transfer::detail

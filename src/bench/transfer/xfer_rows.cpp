#include "xfer_rows.hpp"

#include <barrier>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>

namespace kvpager::transfer::detail {

std::vector<RowPlan> rows_of(const XferConfig& c) {
  std::vector<RowPlan> rows;
  for (uint64_t block : sweep(c.start_block_size, c.max_block_size)) {
    for (uint64_t batch : sweep(c.start_batch_size, c.max_batch_size)) {
      rows.push_back({static_cast<uint32_t>(rows.size()), block, batch});
    }
  }
  return rows;
}

std::vector<std::vector<BlockOp>> ops_for(const XferLayout& l, uint32_t initiator,
                                          const RowPlan& row, uint32_t threads) {
  std::vector<std::vector<BlockOp>> ops(threads);
  uint64_t n = 0;
  for (const Flow& f : l.flows) {
    if (f.initiator != initiator) continue;
    for (uint64_t i = 0; i < row.batch; ++i, ++n) {
      const uint64_t slot = l.slot_offset(i, row.block);
      ops[n % threads].push_back(
          {f.target - l.initiators, f.initiator_base + slot, f.target_base + slot, row.block});
    }
  }
  return ops;
}

uint64_t used_bytes(const XferLayout& l, const RowPlan& row) {
  const uint64_t slots = l.region_bytes / row.block;
  return std::min<uint64_t>(row.batch, slots) * row.block;
}

double run_iterations(std::vector<std::unique_ptr<BlockMover>>& movers,
                      const std::vector<std::vector<BlockOp>>& ops, uint64_t warmup,
                      uint64_t iterations) {
  const size_t threads = movers.size();
  std::barrier sync(static_cast<std::ptrdiff_t>(threads));
  std::mutex error_mutex;
  std::exception_ptr error;
  std::chrono::steady_clock::time_point t0, t1;

  auto body = [&](size_t t) {
    bool arrived_all = false;
    try {
      movers[t]->prepare(ops[t]);  // untimed: e.g. copy descriptors uploaded once per row
      auto pass = [&] {
        movers[t]->post_all(ops[t]);
        movers[t]->wait();
      };
      for (uint64_t i = 0; i < warmup; ++i) pass();
      sync.arrive_and_wait();
      if (t == 0) t0 = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < iterations; ++i) pass();
      sync.arrive_and_wait();
      arrived_all = true;
      if (t == 0) t1 = std::chrono::steady_clock::now();
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      if (!arrived_all) sync.arrive_and_drop();
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(body, t);
  body(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  return std::chrono::duration<double>(t1 - t0).count();
}

}  // namespace kvpager::transfer::detail

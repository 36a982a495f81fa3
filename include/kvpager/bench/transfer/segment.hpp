#pragma once
// The pieces every transfer engine provides to the benchmark loop (xfer_bench.cpp):
//   Segment      a buffer one rank owns (host memory, device memory or a file) with untimed
//                helpers to write the check pattern, clear, and count mismatching bytes;
//   BlockMover   posts block transfers and waits for them; one per benchmark thread;
//   LocalEngine  an initiator and its targets in one process (POSIX files, CUDA copies, and
//                CUDA across processes once the peer's memory is imported).
// None of these are thread-safe; each thread uses its own BlockMover.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace kvpager::transfer {

class Segment {
 public:
  virtual ~Segment() = default;
  virtual uint64_t size() const = 0;
  // Writes the pattern for (seed, pattern_offset + i) at offset + i.
  virtual void fill(uint64_t offset, uint64_t bytes, uint64_t pattern_offset, uint64_t seed) = 0;
  virtual void clear(uint64_t offset, uint64_t bytes) = 0;
  // Bytes at offset + i that differ from the pattern at pattern_offset + i.
  virtual uint64_t mismatches(uint64_t offset, uint64_t bytes, uint64_t pattern_offset,
                              uint64_t seed) = 0;
};

// One block: `bytes` between the initiator's local_offset and target `peer`'s remote_offset.
struct BlockOp {
  uint32_t peer = 0;  // target index (0..T-1)
  uint64_t local_offset = 0;
  uint64_t remote_offset = 0;
  uint64_t bytes = 0;
};

// A pass of the benchmark is post_all(ops) then wait(). prepare(ops) is called once, untimed,
// before the passes of a row with the same `ops` (same vector: the row's addresses are fixed),
// so a mover may translate them ahead (e.g. upload copy descriptors to the GPU); post_all of
// the prepared span then allocates nothing. post_all of another span prepares it first.
class BlockMover {
 public:
  virtual ~BlockMover() = default;
  virtual void post(const BlockOp& op) = 0;  // direction fixed at creation (WRITE or READ)
  virtual void prepare(std::span<const BlockOp> ops) { (void)ops; }
  virtual void post_all(std::span<const BlockOp> ops) {
    for (const BlockOp& op : ops) post(op);
  }
  virtual void wait() = 0;  // every posted op has completed
};

class LocalEngine {
 public:
  virtual ~LocalEngine() = default;
  virtual Segment& initiator() = 0;
  virtual Segment& target(uint32_t peer) = 0;
  virtual std::unique_ptr<BlockMover> mover(uint32_t thread, bool write) = 0;
  // Called once after the last row (e.g. to tell a peer process it may go).
  virtual void finish() {}
  // How the movers move blocks, for the report ("" when the engine's name says it all).
  virtual std::string how() const { return {}; }
};

}  // namespace kvpager::transfer

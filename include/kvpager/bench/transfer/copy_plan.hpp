#pragma once
// How the CUDA engine moves one thread's transfer batch, and the host-side planning of it. The
// engines (`--copy_engine`, kvpager addition):
//   per-block  one cuMemcpyAsync per block on the copy engines (nixlbench's way; bound by the
//              per-copy cost for blocks below a few MiB)
//   batch      cuMemcpyBatchAsync: the whole batch in one driver call (needs a CUDA 13 driver)
//   kernel     one launch of a gather/scatter copy kernel per batch (copy_kernel.cu): the
//              pieces live in a device buffer uploaded once per row, every CTA copies pieces
//              with 16-byte loads; pinned host memory is read or written directly over PCIe
//              (unified addressing), so the same kernel serves H2D, D2H, D2D and peer copies
//   auto       the default: see resolve_copy_engine
// Pure functions on plain values: thread-safe, no driver needed (tested in CI).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kvpager/bench/transfer/segment.hpp"

namespace kvpager::transfer {

enum class CopyEngine { kAuto, kPerBlock, kBatch, kKernel };

// "auto" | "per-block" | "batch" | "kernel"; anything else throws InvalidArgument naming
// --copy_engine and the accepted values.
CopyEngine parse_copy_engine(const std::string& name);
const char* copy_engine_name(CopyEngine engine);

// What decides `auto`.
struct CopyRoute {
  bool device_memory = false;    // at least one side is VRAM (initiator or a target)
  bool kernel_built = false;     // this binary embeds the copy kernel (nvcc was found)
  bool kernel_reaches = false;   // the initiator's device can address every target
  bool batch_available = false;  // the driver has cuMemcpyBatchAsync (CUDA 13 form)
};

// `requested` unless it is auto. auto: kernel when a side is VRAM and the kernel is built and
// reaches every target; otherwise per-block (host-to-host copies, peers without peer access).
// Throws InvalidArgument when `requested` cannot run here (kernel not built or a target it
// cannot address, batch without the driver entry), saying which engine can.
CopyEngine resolve_copy_engine(CopyEngine requested, const CopyRoute& route);

// One contiguous copy of the kernel; exactly the layout copy_kernel.cu reads.
struct CopyPiece {
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t bytes = 0;
};
static_assert(sizeof(CopyPiece) == 24, "copy_kernel.cu reads three 64-bit words per piece");

// Pieces of at most this size spread a batch evenly over the CTAs (a 576 KiB block is 9
// pieces, so the last wave of CTAs idles for at most 1/9 of one block's time).
inline constexpr uint64_t kMaxPieceBytes = 64ull << 10;

// A segment as the initiator's device addresses it.
struct SegmentSpan {
  uint64_t base = 0;
  uint64_t size = 0;
};

// The copies of `ops` in op order: source and destination from the initiator and target
// spans (write: initiator -> target, read: target -> initiator), each block split into
// ceil(bytes / max_piece) pieces of equal size rounded up to 16 bytes (the last one takes the
// rest); max_piece == 0 keeps one piece per block. Clears `out` first and reuses its
// capacity. Throws InvalidArgument (nothing appended) for an unknown peer, a zero-byte op or
// an op outside its segment.
void plan_copies(std::span<const BlockOp> ops, SegmentSpan initiator,
                 std::span<const SegmentSpan> targets, bool write, uint64_t max_piece,
                 std::vector<CopyPiece>& out);

// Launch shape of the copy kernel for `pieces` on a device with `sms` multiprocessors:
// kCopyThreads threads per CTA, at most kCopyCtasPerSm CTAs per SM (the kernel's launch
// bounds), never more CTAs than pieces, at least one.
inline constexpr uint32_t kCopyThreads = 256;
inline constexpr uint32_t kCopyCtasPerSm = 8;
uint32_t copy_kernel_ctas(uint64_t pieces, int sms);

}  // namespace kvpager::transfer

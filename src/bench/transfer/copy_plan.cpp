#include "kvpager/bench/transfer/copy_plan.hpp"

#include <algorithm>

#include "kvpager/common/error.hpp"

namespace kvpager::transfer {

CopyEngine parse_copy_engine(const std::string& name) {
  if (name == "auto") return CopyEngine::kAuto;
  if (name == "per-block") return CopyEngine::kPerBlock;
  if (name == "batch") return CopyEngine::kBatch;
  if (name == "kernel") return CopyEngine::kKernel;
  throw InvalidArgument("--copy_engine " + name + ": expected auto, per-block, batch or kernel");
}

const char* copy_engine_name(CopyEngine engine) {
  switch (engine) {
    case CopyEngine::kAuto:
      return "auto";
    case CopyEngine::kPerBlock:
      return "per-block";
    case CopyEngine::kBatch:
      return "batch";
    case CopyEngine::kKernel:
      return "kernel";
  }
  return "?";
}

CopyEngine resolve_copy_engine(CopyEngine requested, const CopyRoute& r) {
  switch (requested) {
    case CopyEngine::kAuto:
      return r.device_memory && r.kernel_built && r.kernel_reaches ? CopyEngine::kKernel
                                                                   : CopyEngine::kPerBlock;
    case CopyEngine::kPerBlock:
      return requested;
    case CopyEngine::kBatch:
      if (!r.batch_available) {
        throw InvalidArgument(
            "--copy_engine batch needs cuMemcpyBatchAsync of a CUDA 13 driver, which this "
            "driver lacks; use --copy_engine kernel or per-block");
      }
      return requested;
    case CopyEngine::kKernel:
      if (!r.kernel_built) {
        throw InvalidArgument(
            "--copy_engine kernel: this kvpager was built without nvcc (no copy kernel); use "
            "--copy_engine per-block or batch, or rebuild with the CUDA toolkit");
      }
      if (!r.kernel_reaches) {
        throw InvalidArgument(
            "--copy_engine kernel: the initiator's GPU cannot address a target (no peer "
            "access between the devices); use --copy_engine per-block or batch");
      }
      return requested;
  }
  return CopyEngine::kPerBlock;
}

void plan_copies(std::span<const BlockOp> ops, SegmentSpan initiator,
                 std::span<const SegmentSpan> targets, bool write, uint64_t max_piece,
                 std::vector<CopyPiece>& out) {
  auto inside = [](uint64_t offset, uint64_t bytes, const SegmentSpan& s) {
    return offset <= s.size && bytes <= s.size - offset;
  };
  for (size_t i = 0; i < ops.size(); ++i) {
    const BlockOp& op = ops[i];
    const std::string which = "block op " + std::to_string(i);
    if (op.peer >= targets.size()) {
      throw InvalidArgument(which + ": target " + std::to_string(op.peer) + " of " +
                            std::to_string(targets.size()));
    }
    if (op.bytes == 0) throw InvalidArgument(which + ": zero bytes");
    if (!inside(op.local_offset, op.bytes, initiator) ||
        !inside(op.remote_offset, op.bytes, targets[op.peer])) {
      throw InvalidArgument(which + ": " + std::to_string(op.bytes) + " bytes at " +
                            std::to_string(op.local_offset) + " -> " +
                            std::to_string(op.remote_offset) + " lie outside the segments");
    }
  }
  out.clear();
  for (const BlockOp& op : ops) {
    const uint64_t local = initiator.base + op.local_offset;
    const uint64_t remote = targets[op.peer].base + op.remote_offset;
    const uint64_t src = write ? local : remote;
    const uint64_t dst = write ? remote : local;
    uint64_t piece = op.bytes;
    if (max_piece != 0 && op.bytes > max_piece) {
      const uint64_t n = (op.bytes + max_piece - 1) / max_piece;
      piece = ((op.bytes + n - 1) / n + 15) / 16 * 16;
    }
    for (uint64_t done = 0; done < op.bytes; done += piece) {
      out.push_back({src + done, dst + done, std::min(piece, op.bytes - done)});
    }
  }
}

uint32_t copy_kernel_ctas(uint64_t pieces, int sms) {
  const uint64_t most = static_cast<uint64_t>(std::max(sms, 1)) * kCopyCtasPerSm;
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min(pieces, most)));
}

}  // namespace kvpager::transfer

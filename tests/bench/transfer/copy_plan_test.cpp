// Host side of the CUDA engine's batched copies (copy_plan.hpp): engine names and the choice
// of `auto`, the pieces a batch becomes (every byte of every block exactly once, even pieces,
// bounds checked) and the kernel's grid. No GPU needed.
#include "kvpager/bench/transfer/copy_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::transfer;

TEST(CopyEngineName, RoundTripsAndRejectsUnknownNames) {
  for (const char* name : {"auto", "per-block", "batch", "kernel"}) {
    EXPECT_STREQ(copy_engine_name(parse_copy_engine(name)), name);
  }
  try {
    parse_copy_engine("dma");
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--copy_engine dma"), std::string::npos) << e.what();
  }
}

TEST(CopyEngineChoice, AutoTakesTheKernelForDeviceMemoryItCanReach) {
  const CopyRoute all{true, true, true, true};
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kAuto, all), CopyEngine::kKernel);
  CopyRoute host_only = all;
  host_only.device_memory = false;
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kAuto, host_only), CopyEngine::kPerBlock);
  CopyRoute no_peer = all;
  no_peer.kernel_reaches = false;
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kAuto, no_peer), CopyEngine::kPerBlock);
  CopyRoute no_nvcc = all;
  no_nvcc.kernel_built = false;
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kAuto, no_nvcc), CopyEngine::kPerBlock);
  // Explicit choices run as asked, or say why they cannot.
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kPerBlock, no_nvcc), CopyEngine::kPerBlock);
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kBatch, all), CopyEngine::kBatch);
  EXPECT_EQ(resolve_copy_engine(CopyEngine::kKernel, host_only), CopyEngine::kKernel);
  EXPECT_THROW(resolve_copy_engine(CopyEngine::kKernel, no_nvcc), InvalidArgument);
  EXPECT_THROW(resolve_copy_engine(CopyEngine::kKernel, no_peer), InvalidArgument);
  CopyRoute old_driver = all;
  old_driver.batch_available = false;
  EXPECT_THROW(resolve_copy_engine(CopyEngine::kBatch, old_driver), InvalidArgument);
}

namespace {

// Every (source byte -> destination byte) the pieces copy, checked against the ops directly.
void expect_exact_cover(const std::vector<BlockOp>& ops, const std::vector<CopyPiece>& pieces,
                        SegmentSpan init, const std::vector<SegmentSpan>& targets, bool write,
                        uint64_t max_piece) {
  std::map<uint64_t, uint64_t> dst_to_src;  // per byte, small sizes only
  for (const CopyPiece& p : pieces) {
    ASSERT_GT(p.bytes, 0u);
    if (max_piece) ASSERT_LE(p.bytes, max_piece);
    for (uint64_t i = 0; i < p.bytes; ++i) {
      ASSERT_TRUE(dst_to_src.emplace(p.dst + i, p.src + i).second) << "byte copied twice";
    }
  }
  uint64_t total = 0;
  for (const BlockOp& op : ops) {
    const uint64_t local = init.base + op.local_offset;
    const uint64_t remote = targets[op.peer].base + op.remote_offset;
    for (uint64_t i = 0; i < op.bytes; ++i) {
      const uint64_t dst = (write ? remote : local) + i;
      const uint64_t src = (write ? local : remote) + i;
      auto it = dst_to_src.find(dst);
      ASSERT_NE(it, dst_to_src.end()) << "byte " << i << " of a block not copied";
      ASSERT_EQ(it->second, src);
    }
    total += op.bytes;
  }
  EXPECT_EQ(dst_to_src.size(), total);
}

}  // namespace

TEST(PlanCopies, CoversEveryByteOnceInBothDirections) {
  const SegmentSpan init{0x7f0000000000, 1 << 20};
  const std::vector<SegmentSpan> targets{{0x10000000, 1 << 20}, {0x20000003, 1 << 20}};
  std::vector<BlockOp> ops;
  uint64_t at = 0;
  for (uint64_t bytes :
       {1ull, 3ull, 15ull, 16ull, 17ull, 100ull, 4095ull, 4097ull, 65537ull, 200003ull}) {
    ops.push_back({static_cast<uint32_t>(ops.size() % 2), at + 5, at + 11, bytes});
    at += bytes + 64;
  }
  for (bool write : {true, false}) {
    for (uint64_t max_piece : {uint64_t{0}, uint64_t{16}, uint64_t{4096}, kMaxPieceBytes}) {
      std::vector<CopyPiece> pieces;
      plan_copies(ops, init, targets, write, max_piece, pieces);
      expect_exact_cover(ops, pieces, init, targets, write, max_piece);
      if (max_piece == 0) EXPECT_EQ(pieces.size(), ops.size());
    }
  }
}

TEST(PlanCopies, SplitsPlanBlocksIntoEvenAlignedPieces) {
  const SegmentSpan init{0, 64ull << 20};
  const std::vector<SegmentSpan> targets{{1ull << 40, 64ull << 20}};
  for (uint64_t block : {589824ull, 147456ull}) {  // DeepSeek-R1 block and layer plans
    std::vector<BlockOp> ops;
    for (uint64_t i = 0; i < 20; ++i) ops.push_back({0, i * block, i * block, block});
    std::vector<CopyPiece> pieces;
    plan_copies(ops, init, targets, true, kMaxPieceBytes, pieces);
    const uint64_t per_block = (block + kMaxPieceBytes - 1) / kMaxPieceBytes;  // 9 and 3
    ASSERT_EQ(pieces.size(), 20 * per_block);
    for (const CopyPiece& p : pieces) {
      EXPECT_EQ(p.bytes, block / per_block);  // both plans split evenly
      EXPECT_EQ(p.src % 16, 0u);
      EXPECT_EQ(p.dst % 16, 0u);
    }
  }
}

TEST(PlanCopies, RejectsOpsOutsideTheSegmentsAndKeepsNothing) {
  const SegmentSpan init{4096, 1000};
  const std::vector<SegmentSpan> targets{{8192, 500}};
  std::vector<CopyPiece> pieces{{1, 2, 3}};
  auto rejects = [&](BlockOp op) {
    const std::vector<BlockOp> ops{{0, 0, 0, 10}, op};
    EXPECT_THROW(plan_copies(ops, init, targets, true, 0, pieces), InvalidArgument);
    EXPECT_EQ(pieces.size(), 1u);  // untouched
  };
  rejects({1, 0, 0, 1});                               // no such target
  rejects({0, 0, 0, 0});                               // empty block
  rejects({0, 995, 0, 6});                             // past the initiator
  rejects({0, 0, 495, 6});                             // past the target
  rejects({0, ~0ull - 2, 0, 8});                       // offset + bytes overflows
  rejects({0, 0, 0, ~0ull});                           // larger than any segment
  const std::vector<BlockOp> edge{{0, 990, 490, 10}};  // ends exactly at both ends
  EXPECT_NO_THROW(plan_copies(edge, init, targets, false, 0, pieces));
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].src, 8192u + 490);
  EXPECT_EQ(pieces[0].dst, 4096u + 990);
}

TEST(CopyKernelGrid, EnoughCtasForEveryPieceUpToTheResidentLimit) {
  EXPECT_EQ(copy_kernel_ctas(0, 132), 1u);
  EXPECT_EQ(copy_kernel_ctas(5, 132), 5u);
  EXPECT_EQ(copy_kernel_ctas(53622, 132), 132u * kCopyCtasPerSm);
  EXPECT_EQ(copy_kernel_ctas(100, 0), std::min<uint64_t>(100, kCopyCtasPerSm));
}

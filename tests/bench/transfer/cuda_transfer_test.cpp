// CUDA engine on a GPU (label gpu; skips without a device): host<->device and device<->device
// copies, and device memory exported by another process, every byte verified, with every copy
// engine (--copy_engine per-block, batch, kernel); the movers directly with odd sizes, skewed
// offsets and many small blocks, checking that nothing around the blocks is touched.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "cli/kvbench_run.hpp"
#include "kvpager/bench/transfer/cuda_engine.hpp"
#include "kvpager/bench/transfer/xfer_bench.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

using namespace kvpager::transfer;

namespace {

class CudaTransfer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kvpager::vmm::CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device present";
  }
  static XferConfig small(const std::string& from, const std::string& to, const std::string& op) {
    XferConfig c;
    c.backend = "CUDA";
    c.initiator_seg_type = from;
    c.target_seg_type = to;
    c.op_type = op;
    c.start_block_size = 4096;
    c.max_block_size = 1 << 20;
    c.start_batch_size = 4;
    c.max_batch_size = 16;
    c.num_iter = 3;
    c.warmup_iter = 1;
    c.check_consistency = true;
    return c;
  }
  // The engines this driver runs (batch needs a CUDA 13 driver).
  static std::vector<std::string> engines() {
    std::vector<std::string> e{"per-block", "kernel", "auto"};
    if (kvpager::vmm::CudaDriver::get().cuMemcpyBatchAsync != nullptr) e.push_back("batch");
    return e;
  }
};

}  // namespace

TEST_F(CudaTransfer, HostDeviceAndDeviceDeviceCopiesMoveEveryByte) {
  for (const std::string& engine : engines()) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"DRAM", "VRAM"}, {"VRAM", "DRAM"}, {"VRAM", "VRAM"}, {"DRAM", "DRAM"}}) {
      for (const char* op : {"WRITE", "READ"}) {
        for (uint64_t threads : {1u, 2u}) {
          XferConfig c = small(from, to, op);
          c.num_threads = threads;
          c.copy_engine = engine;
          std::ostringstream table;
          const XferReport r = run_xfer_bench(c, table);
          ASSERT_EQ(r.rows.size(), 9u * 3u) << engine << " " << from << "->" << to << " " << op;
          for (const auto& row : r.rows) EXPECT_EQ(row.mismatches, 0u) << engine;
          if (engine != "auto") {
            EXPECT_NE(r.description.find("--copy_engine " + engine), std::string::npos)
                << r.description;
          }
        }
      }
    }
  }
}

TEST_F(CudaTransfer, OddBlockSizesLandUnalignedAndStillMoveEveryByte) {
  // Odd block sizes put block i at i x block: every alignment modulo 16, sizes not a multiple
  // of any word, a batch wrapping around a small buffer (ring of slots).
  for (const std::string& engine : engines()) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"DRAM", "VRAM"}, {"VRAM", "DRAM"}, {"VRAM", "VRAM"}}) {
      XferConfig c = small(from, to, "WRITE");
      c.copy_engine = engine;
      c.start_block_size = 4097;
      c.max_block_size = 4097 * 64 + 1;  // rows 4097, 8194, ..., 262208, 262209
      c.start_batch_size = 7;
      c.max_batch_size = 300;
      c.total_buffer_size = 8 << 20;
      std::ostringstream table;
      for (const auto& row : run_xfer_bench(c, table).rows) {
        EXPECT_EQ(row.mismatches, 0u) << engine << " " << from << "->" << to << " block "
                                      << row.block_size << " batch " << row.batch_size;
      }
    }
  }
}

namespace {

struct Case {
  std::string from, to;
  bool write;
};

}  // namespace

// The movers directly: blocks with every relative alignment of source and destination (the
// kernel's 16/8/4/2/1-byte paths), sizes from 1 byte to several pieces, and thousands of tiny
// blocks; every copied byte is checked and every byte between the blocks must keep what was
// there before (no overrun, no stray write).
TEST_F(CudaTransfer, MoversCopyExactlyTheBlocksWithAnyAlignment) {
  std::vector<BlockOp> ops;
  uint64_t local = 0, remote = 0;
  const uint64_t sizes[] = {1,  2,   3,    7,    8,     15,    16,         17,
                            31, 100, 4095, 4096, 65535, 65537, 200000 + 7, 3 * 65536 + 1};
  for (uint64_t skew = 0; skew < 16; ++skew) {
    for (uint64_t bytes : sizes) {
      local = (local + 63) / 64 * 64 + skew;  // source at 64k + skew, destination at 64k + 0
      remote = (remote + 63) / 64 * 64 + (skew * 7) % 16;
      ops.push_back({0, local, remote, bytes});
      local += bytes + 5;
      remote += bytes + 9;
    }
  }
  for (int i = 0; i < 3000; ++i) {  // many small blocks
    ops.push_back({0, local, remote, 37});
    local += 37 + 3;
    remote += 37 + 11;
  }
  const uint64_t span = std::max(local, remote) + 4096;
  const uint64_t seed_src = 0xA11CE, seed_dst = 0xB0B;

  for (const std::string& engine : engines()) {
    for (const Case& k : std::vector<Case>{{"DRAM", "VRAM", true},
                                           {"VRAM", "DRAM", true},
                                           {"VRAM", "VRAM", true},
                                           {"DRAM", "VRAM", false},
                                           {"VRAM", "DRAM", false},
                                           {"VRAM", "VRAM", false}}) {
      XferConfig c = small(k.from, k.to, k.write ? "WRITE" : "READ");
      c.copy_engine = engine;
      c.max_block_size = 4096;
      c.max_batch_size = span / 4096 + 1;
      c.start_block_size = c.max_block_size;
      c.start_batch_size = c.max_batch_size;
      c.total_buffer_size = c.max_block_size * c.max_batch_size;
      const XferLayout layout = make_layout(c);
      ASSERT_GE(layout.initiator_buffer_bytes(), span);
      auto engine_ptr = make_cuda_engine(c, layout);
      Segment& init = engine_ptr->initiator();
      Segment& target = engine_ptr->target(0);
      Segment& src = k.write ? init : target;
      Segment& dst = k.write ? target : init;
      src.fill(0, span, 0, seed_src);
      dst.fill(0, span, 0, seed_dst);
      auto mover = engine_ptr->mover(0, k.write);
      mover->prepare(ops);
      for (int pass = 0; pass < 2; ++pass) {  // the second pass reuses the prepared copies
        mover->post_all(ops);
        mover->wait();
      }
      const std::string what = engine + " " + k.from + (k.write ? " -> " : " <- ") + k.to;
      std::vector<std::pair<uint64_t, uint64_t>> written;  // [start, end) in dst
      for (const BlockOp& op : ops) {
        const uint64_t s = k.write ? op.local_offset : op.remote_offset;
        const uint64_t d = k.write ? op.remote_offset : op.local_offset;
        ASSERT_EQ(dst.mismatches(d, op.bytes, s, seed_src), 0u)
            << what << ": block of " << op.bytes << " B from " << s << " to " << d;
        written.emplace_back(d, d + op.bytes);
      }
      std::sort(written.begin(), written.end());
      uint64_t at = 0;
      for (const auto& [begin, end] : written) {
        if (begin > at) {
          ASSERT_EQ(dst.mismatches(at, begin - at, at, seed_dst), 0u)
              << what << ": bytes [" << at << ", " << begin << ") between blocks changed";
        }
        at = std::max(at, end);
      }
      ASSERT_EQ(dst.mismatches(at, span - at, at, seed_dst), 0u) << what << ": tail changed";
      // post() alone (one block, the per-block path of every engine) still works.
      mover->post(ops.front());
      mover->wait();
      mover.reset();
      engine_ptr->finish();
    }
  }
}

TEST_F(CudaTransfer, UnknownCopyEngineIsRefusedBeforeAnythingRuns) {
  XferConfig c = small("DRAM", "VRAM", "WRITE");
  c.copy_engine = "dma";
  std::ostringstream table;
  EXPECT_THROW(run_xfer_bench(c, table), kvpager::InvalidArgument);
}

TEST_F(CudaTransfer, TensorParallelTargetsGetTheirShards) {
  XferConfig c = small("VRAM", "VRAM", "WRITE");
  c.scheme = "tp";
  c.num_target_dev = 2;
  std::ostringstream table;
  EXPECT_EQ(run_xfer_bench(c, table).rows.size(), 27u);
}

TEST_F(CudaTransfer, ExportedVmmMemoryOfAnotherProcess) {
  for (const std::string& engine : engines()) {
    for (const std::string op : {"WRITE", "READ"}) {
      const std::vector<std::string> args = {
          "bench",
          "xfer",
          "--backend",
          "CUDA",
          "--cuda_ipc",
          "--spawn_local",
          "--initiator_seg_type",
          "VRAM",
          "--target_seg_type",
          "VRAM",
          "--op_type",
          op,
          "--benchmark_group",
          "ipc-" + op + "-" + engine + "-" + std::to_string(::getpid()),
          "--copy_engine",
          engine,
          "--start_block_size",
          "64K",
          "--max_block_size",
          "1M",
          "--max_batch_size",
          "8",
          "--num_iter",
          "3",
          "--warmup_iter",
          "1",
          "--check_consistency"};
      const auto r = kvpager::testing::run_kvpager(args);
      EXPECT_EQ(r.rc, 0) << engine << " " << op << "\n" << r.err;
      EXPECT_NE(r.out.find("1048576"), std::string::npos) << r.out;
    }
  }
}

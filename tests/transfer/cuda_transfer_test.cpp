// CUDA engine on a GPU (label gpu; skips without a device): host<->device and device<->device
// copies, and device memory exported by another process, every byte verified.
#include <gtest/gtest.h>

#include <sstream>

#include "cli/kvbench_run.hpp"
#include "kvpager/transfer/xfer_bench.hpp"
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
};

}  // namespace

TEST_F(CudaTransfer, HostDeviceAndDeviceDeviceCopiesMoveEveryByte) {
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"DRAM", "VRAM"}, {"VRAM", "DRAM"}, {"VRAM", "VRAM"}, {"DRAM", "DRAM"}}) {
    for (const char* op : {"WRITE", "READ"}) {
      for (uint64_t threads : {1u, 2u}) {
        XferConfig c = small(from, to, op);
        c.num_threads = threads;
        std::ostringstream table;
        const XferReport r = run_xfer_bench(c, table);
        ASSERT_EQ(r.rows.size(), 9u * 3u) << from << "->" << to << " " << op;
        for (const auto& row : r.rows) EXPECT_EQ(row.mismatches, 0u);
      }
    }
  }
}

TEST_F(CudaTransfer, TensorParallelTargetsGetTheirShards) {
  XferConfig c = small("VRAM", "VRAM", "WRITE");
  c.scheme = "tp";
  c.num_target_dev = 2;
  std::ostringstream table;
  EXPECT_EQ(run_xfer_bench(c, table).rows.size(), 27u);
}

TEST_F(CudaTransfer, ExportedVmmMemoryOfAnotherProcess) {
  for (const std::string op : {"WRITE", "READ"}) {
    const std::vector<std::string> args = {"bench",
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
                                           "ipc-" + op + "-" + std::to_string(::getpid()),
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
    EXPECT_EQ(r.rc, 0) << op << "\n" << r.err;
    EXPECT_NE(r.out.find("1048576"), std::string::npos) << r.out;
  }
}

// XferConfig validation, nixlbench flags, segment mapping, layouts and the check pattern.
#include "kvpager/bench/transfer/xfer_config.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <vector>

#include "kvpager/bench/transfer/host_buffer.hpp"
#include "kvpager/bench/transfer/xfer_bench.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::transfer;

TEST(XferConfig, DefaultsAreNixlbenchsAndValid) {
  XferConfig c;
  EXPECT_NO_THROW(c.validate());
  const auto flags = nixlbench_flags(c);
  EXPECT_EQ(flags.size(), 25u);
  for (const auto& f : flags) EXPECT_TRUE(f.is_default) << f.name;
  EXPECT_EQ(nixlbench_argv(c), std::vector<std::string>{"nixlbench"});
}

TEST(XferConfig, ArgvHasOnlyNonDefaultFlags) {
  XferConfig c;
  c.backend = "GDS";
  c.check_consistency = true;
  c.max_block_size = 589824;
  EXPECT_EQ(nixlbench_argv(c),
            (std::vector<std::string>{"nixlbench", "--backend", "GDS", "--check_consistency",
                                      "--max_block_size", "589824"}));
}

TEST(XferConfig, ValidationNamesTheFlag) {
  auto message = [](XferConfig c) -> std::string {
    try {
      c.validate();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  XferConfig c;
  c.backend = "RDMA";
  EXPECT_NE(message(c).find("--backend RDMA"), std::string::npos);
  c = {};
  c.start_block_size = 2 * c.max_block_size;
  EXPECT_NE(message(c).find("--start_block_size"), std::string::npos);
  c = {};
  c.num_iter = 0;
  EXPECT_NE(message(c).find("--num_iter 0"), std::string::npos);
  c = {};
  c.num_initiator_dev = 2;
  EXPECT_NE(message(c).find("pairwise"), std::string::npos);
  c = {};
  c.scheme = "manytoone";
  c.num_target_dev = 2;
  EXPECT_NE(message(c).find("manytoone"), std::string::npos);
  c = {};
  c.worker_type = "nvshmem";  // a plan may name it; bench xfer refuses to run it
  EXPECT_EQ(message(c), "");
  std::ostringstream table;
  EXPECT_THROW(run_xfer_bench(c, table), InvalidArgument);
  c = {};
  c.enable_vmm = true;
  EXPECT_THROW(run_xfer_bench(c, table), InvalidArgument);
}

TEST(XferConfig, SegmentsPerBackend) {
  XferConfig c;
  c.backend = "GDS";
  configure_segments(c, {"gpu", "memory"});
  EXPECT_EQ(c.op_type, "WRITE");
  EXPECT_EQ(c.target_seg_type, "VRAM");
  c = {};
  c.backend = "GDS";
  configure_segments(c, {"file", "memory"});
  EXPECT_EQ(c.op_type, "READ");
  c = {};
  c.backend = "UCX";
  configure_segments(c, {"gpu", "memory"});
  EXPECT_EQ(c.initiator_seg_type, "VRAM");
  EXPECT_EQ(c.target_seg_type, "DRAM");
  c = {};
  EXPECT_THROW(configure_segments(c, {"file", "memory"}), InvalidArgument);
  c.backend = "POSIX";
  EXPECT_THROW(configure_segments(c, {"gpu", "memory"}), InvalidArgument);
  EXPECT_THROW(configure_segments(c, {"tape", "memory"}), InvalidArgument);
}

TEST(XferLayout, SchemesPairRanksAndRegions) {
  XferConfig c;
  c.max_block_size = 64 << 10;
  c.max_batch_size = 10;
  auto l = make_layout(c);
  ASSERT_EQ(l.flows.size(), 1u);
  EXPECT_EQ(l.world_size(), 2u);
  EXPECT_EQ(l.region_bytes, 640u << 10);
  EXPECT_EQ(l.slot_offset(12, 64 << 10), 2u * (64 << 10));  // a ring of 10 slots

  c.scheme = "manytoone";
  c.num_initiator_dev = 3;
  l = make_layout(c);
  ASSERT_EQ(l.flows.size(), 3u);
  EXPECT_EQ(l.flows[2].initiator, 2u);
  EXPECT_EQ(l.flows[2].target, 3u);
  EXPECT_EQ(l.flows[2].target_base, 2 * l.region_bytes);
  EXPECT_EQ(l.target_buffer_bytes(), 3 * l.region_bytes);

  c = {};
  c.max_block_size = 64 << 10;
  c.scheme = "tp";
  c.num_target_dev = 4;
  l = make_layout(c);
  ASSERT_EQ(l.flows.size(), 4u);
  EXPECT_EQ(l.flows[3].initiator_base, 3 * l.region_bytes);
  EXPECT_EQ(l.flows[3].target_base, 0u);
  EXPECT_EQ(l.initiator_buffer_bytes(), 4 * l.region_bytes);

  c.scheme = "onetomany";
  l = make_layout(c);
  for (const auto& f : l.flows) EXPECT_EQ(f.initiator_base, 0u);

  c = {};
  c.max_block_size = 1 << 20;
  c.max_batch_size = 1 << 20;
  c.total_buffer_size = 8 << 20;
  EXPECT_EQ(make_layout(c).region_bytes, 8u << 20);  // capped by the total buffer
}

TEST(XferLayout, SweepDoublesUpToMax) {
  EXPECT_EQ(sweep(4096, 4096), std::vector<uint64_t>{4096});
  EXPECT_EQ(sweep(1, 5), (std::vector<uint64_t>{1, 2, 4, 5}));
}

TEST(XferLayout, PatternIsPositionalAndCountsEveryBadByte) {
  HostBuffer a(1 << 16);
  a.fill(100, 5000, 100, 7);
  EXPECT_EQ(a.mismatches(100, 5000, 100, 7), 0u);
  EXPECT_GT(a.mismatches(100, 5000, 101, 7), 4000u);  // shifted by one byte
  EXPECT_GT(a.mismatches(100, 5000, 100, 8), 4000u);  // another seed
  a.data()[2000] ^= std::byte{1};
  a.data()[2001] ^= std::byte{0x80};
  EXPECT_EQ(a.mismatches(100, 5000, 100, 7), 2u);
  // The same pattern offset written elsewhere compares equal.
  a.fill(40000, 300, 123, 9);
  EXPECT_EQ(a.mismatches(40000, 300, 123, 9), 0u);
}

// Issue 20 item 5: a plan of 7.5e12 blocks (kvbench profile --isl 4e18) grew memory until the
// kernel killed the process. What a run would allocate and count is bounded before it starts.
TEST(XferConfig, ValidateForRunBoundsWhatARunAllocates) {
  XferConfig c;
  EXPECT_NO_THROW(c.validate_for_run());
  c.start_batch_size = c.max_batch_size = 7'500'000'000'000ull;
  EXPECT_NO_THROW(c.validate());                        // a plan may show it ...
  EXPECT_THROW(c.validate_for_run(), InvalidArgument);  // ... but not build it
  c = XferConfig{};
  c.start_batch_size = c.max_batch_size = kMaxXferOpsPerBatch;
  EXPECT_NO_THROW(c.validate_for_run());
  c.scheme = "onetomany";
  c.num_target_dev = 2;  // twice the descriptors
  EXPECT_THROW(c.validate_for_run(), InvalidArgument);
  c = XferConfig{};
  c.num_initiator_dev = c.num_target_dev = (1ull << 32) + 1;  // would truncate to 1 rank
  EXPECT_THROW(c.validate_for_run(), InvalidArgument);
  c = XferConfig{};
  c.num_threads = 1ull << 40;
  EXPECT_THROW(c.validate_for_run(), InvalidArgument);
  c = XferConfig{};
  c.num_iter = 1ull << 40;  // x 64 MiB blocks: bytes per row would wrap
  EXPECT_THROW(c.validate_for_run(), InvalidArgument);
}

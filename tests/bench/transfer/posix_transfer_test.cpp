// POSIX engine (io_uring, O_DIRECT): every byte verified, in one process.
#include <gtest/gtest.h>

#include <unistd.h>
#include <filesystem>
#include <sstream>

#include "kvpager/bench/transfer/posix_engine.hpp"
#include "kvpager/bench/transfer/xfer_bench.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::transfer;

namespace {

XferConfig small(const std::string& op) {
  XferConfig c;
  c.backend = "POSIX";
  c.op_type = op;
  c.start_block_size = 4096;
  c.max_block_size = 64 << 10;
  c.start_batch_size = 3;
  c.max_batch_size = 12;
  c.num_iter = 3;
  c.warmup_iter = 1;
  c.check_consistency = true;
  return c;
}

}  // namespace

TEST(PosixTransfer, WriteAndReadEveryRowVerified) {
  for (const char* op : {"WRITE", "READ"}) {
    for (bool direct : {false, true}) {
      for (uint64_t threads : {1u, 2u}) {
        XferConfig c = small(op);
        c.storage_enable_direct = direct;
        c.num_threads = threads;
        std::ostringstream table;
        const XferReport r = run_xfer_bench(c, table);
        ASSERT_EQ(r.rows.size(), 5u * 3u) << op;  // 4K..64K x 3, 6, 12
        for (const auto& row : r.rows) {
          EXPECT_TRUE(row.checked);
          EXPECT_EQ(row.mismatches, 0u);
          EXPECT_EQ(row.bytes, row.block_size * row.batch_size * 3);
        }
        EXPECT_EQ(table.str().rfind("Block Size (B)      Batch Size     Avg Lat. (us)", 0), 0u);
      }
    }
  }
}

TEST(PosixTransfer, BatchLargerThanTheBufferWrapsAround) {
  XferConfig c = small("WRITE");
  c.start_block_size = c.max_block_size = 8192;
  c.start_batch_size = c.max_batch_size = 100;
  c.total_buffer_size = 64 << 10;  // 8 slots
  std::ostringstream table;
  const XferReport r = run_xfer_bench(c, table);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].mismatches, 0u);
}

TEST(PosixTransfer, NamedFileIsUsedAndODirectNeedsAlignedBlocks) {
  const auto path = std::filesystem::temp_directory_path() / "kvpager_posix_test.bin";
  XferConfig c = small("WRITE");
  c.gds_filepath = path.string();
  std::ostringstream table;
  run_xfer_bench(c, table);
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove(path);
  c.storage_enable_direct = true;
  c.start_block_size = 1000;
  EXPECT_THROW(run_xfer_bench(c, table), InvalidArgument);
  c = small("WRITE");
  c.initiator_seg_type = "VRAM";
  EXPECT_THROW(run_xfer_bench(c, table), InvalidArgument);
}

// Issue 20 item 11: a temporary data file (8 GiB by default) must not outlive a SIGINT or
// SIGTERM, so it is unlinked as soon as it is open: the folder is empty while the engine runs.
TEST(PosixTransfer, TemporaryFileIsUnlinkedAsSoonAsItIsOpen) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("kvpager_posix_unlink_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  XferConfig c = small("WRITE");
  c.gds_filepath = dir.string();  // a folder: the engine makes its temporary file there
  {
    const auto engine = make_posix_engine(c, make_layout(c));
    EXPECT_TRUE(fs::is_empty(dir)) << fs::directory_iterator(dir)->path();
    engine->target(0).fill(0, 4096, 0, 7);
    EXPECT_EQ(engine->target(0).mismatches(0, 4096, 0, 7), 0u);  // the fd still holds the data
  }
  EXPECT_TRUE(fs::is_empty(dir));
  fs::remove_all(dir);
}

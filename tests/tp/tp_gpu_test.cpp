// The tp layer with CUDA workers: every strategy maps and unmaps on real device memory (all
// ranks on device 0, taking turns through the device lock), and a map failing on one rank is
// rolled back on the others. Skips without a CUDA device.
#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/tp_scheduler.hpp"
#include "kvpager/vmm/cuda_driver.hpp"
#include "tp/tp_test_support.hpp"

namespace kvpager::tp {
namespace {

class TpGpu : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (std::getenv("KVPAGER_BINARY") == nullptr) GTEST_SKIP() << "KVPAGER_BINARY is not set";
    if (!vmm::CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device";
  }
  TpConfig config() {
    TpConfig c = testing::small_tp_config(GetParam(), 2);
    c.worker.backend.choice = vmm::BackendChoice::kCuda;
    c.worker.geometry = bench_geometry(32, 16);  // a 2 MiB interleaved cell
    c.worker.handle_bytes = 2 * MiB;
    c.worker.virtual_bytes = 1 * GiB;
    c.worker.ready_pages = 2;
    c.timeout = std::chrono::seconds(30);
    c.start_timeout = std::chrono::seconds(60);
    return c;
  }
};

void expect_mapped(TpScheduler& s, std::vector<uint32_t> mapped) {
  for (const RankState& r : s.query()) {
    EXPECT_EQ(r.mapped_pages, mapped.size()) << "rank " << r.rank.value;
    EXPECT_EQ(r.state_checksum, page_state_checksum(mapped)) << "rank " << r.rank.value;
  }
}

TEST_P(TpGpu, MapUnmapAndRollbackOnDevice) {
  TpConfig c = config();
  c.fault = FaultSpec{1, vmm::BackendOp::kSetAccess, 2};
  TpScheduler s(c);
  EXPECT_EQ(s.num_pages(), 512u);
  // Not consecutive: two runs, two set-access calls (a run of consecutive pages takes one).
  const std::vector<PageId> two = {PageId(10), PageId(12)};
  EXPECT_THROW(s.map(two), DriverError);  // rank 1's second set-access fails
  expect_mapped(s, {});
  s.map(two);
  expect_mapped(s, {10, 12});
  s.unmap(two);
  expect_mapped(s, {});
  // A run of consecutive pages: one cuMemSetAccess over 8 handles on the real driver.
  std::vector<PageId> run;
  for (uint32_t p = 20; p < 28; ++p) run.push_back(PageId(p));
  s.map(run);
  expect_mapped(s, {20, 21, 22, 23, 24, 25, 26, 27});
  s.unmap(run);
  expect_mapped(s, {});
  EXPECT_THROW(s.map(std::vector<PageId>{PageId(512)}), InvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Strategies, TpGpu, ::testing::Values("seq", "thread", "async", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvpager::tp

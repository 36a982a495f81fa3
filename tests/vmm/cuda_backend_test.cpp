// GPU tests (label gpu): skip with a message where no CUDA device is present.
#include "kvpager/vmm/cuda_backend.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/cuda_driver.hpp"
#include "support/gpu_capture.hpp"
#include "support/gpu_pattern.hpp"

using namespace kvpager;
using namespace kvpager::vmm;

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDriver::device_present()) GTEST_SKIP() << "no CUDA device present";
  }
};

TEST_F(CudaBackendTest, KernelWritesSurviveUnmapAndRemapOfTheSameHandle) {
  CudaBackend b(0);
  const size_t g = b.granularity();
  ASSERT_GE(g, 2u << 20);
  const uintptr_t va = b.reserve(8 * g, g);
  PhysicalHandle h = b.create(2 * g);
  b.map(va, 2 * g, h, 0);
  b.set_access(va, 2 * g, Access::kReadWrite);
  const char* err = nullptr;
  ASSERT_TRUE(kvpager::testing::gpu_fill_pattern(va, 2 * g, 7, &err)) << err;
  b.unmap(va, 2 * g);
  b.map(va + 4 * g, 2 * g, h, 0);  // same memory, another address
  b.set_access(va + 4 * g, 2 * g, Access::kReadWrite);
  EXPECT_EQ(kvpager::testing::gpu_count_mismatches(va + 4 * g, 2 * g, 7), 0);
  b.unmap(va + 4 * g, 2 * g);
  b.release(h);
  b.free_reservation(va, 8 * g);
}

TEST_F(CudaBackendTest, ErrorsNameTheCallAndResult) {
  CudaBackend b(0);
  const size_t g = b.granularity();
  const uintptr_t va = b.reserve(g, g);
  PhysicalHandle h1 = b.create(g);
  PhysicalHandle h2 = b.create(g);
  b.map(va, g, h1, 0);
  try {
    b.map(va, g, h2, 0);  // the range is mapped already
    FAIL() << "a second map onto a mapped range succeeded";
  } catch (const DriverError& e) {
    EXPECT_EQ(e.call(), "cuMemMap");
    EXPECT_NE(e.result().find("CUDA_ERROR"), std::string::npos) << e.what();
  }
  EXPECT_THROW(b.create(g + 1), InvalidArgument);
  EXPECT_THROW(CudaBackend(1000), InvalidArgument);
  b.unmap(va, g);
  b.release(h1);
  b.release(h2);
  b.free_reservation(va, g);
}

TEST_F(CudaBackendTest, ExhaustionIsOutOfMemory) {
  CudaBackend b(0);
  const uint64_t total = b.memory_info().total_bytes;
  EXPECT_THROW(b.create(kvpager::round_up(total * 2, b.granularity())), OutOfMemory);
}

// vLLM captures its CUDA graphs in global mode while kvpager's threads unmap for other engines.
TEST_F(CudaBackendTest, APreparedThreadNeitherFailsNorBreaksAnotherThreadsGlobalCapture) {
  CudaBackend b(0);
  const size_t g = b.granularity();
  const uintptr_t va = b.reserve(g, g);
  kvpager::testing::GpuStream engine_stream;  // the stream a cache waits on before an unmap
  {
    // The rule the preparation lifts: an unprepared thread's event wait is refused.
    kvpager::testing::GlobalCapture capture;
    std::string error;
    std::thread([&] {
      try {
        b.wait_for_stream(engine_stream.handle());
      } catch (const DriverError& e) {
        error = e.what();
      }
    }).join();
    EXPECT_NE(error, "") << "CUDA allowed an event wait beside a global capture";
    (void)capture.end();
  }
  kvpager::testing::GlobalCapture capture;
  std::string error;
  std::thread([&] {
    try {
      b.prepare_background_thread();
      PhysicalHandle h = b.create(g);
      b.map(va, g, h, 0);
      b.set_access(va, g, Access::kReadWrite);
      b.wait_for_stream(engine_stream.handle());
      b.unmap(va, g);
      b.release(h);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }).join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(capture.end(), "");
  b.free_reservation(va, g);
}

#include "kvpager/vmm/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/vmm/host_backend.hpp"

using namespace kvpager;
using namespace kvpager::vmm;

TEST(FaultInjectingBackend, FailsExactlyTheNthCallThenPassesThrough) {
  auto host = std::make_shared<HostBackend>(HostBackendConfig{64 * 1024, 0});
  FaultInjectingBackend b(host);
  b.fail_on(BackendOp::kCreate, 2, InjectedError::kOutOfMemory);
  PhysicalHandle h1 = b.create(64 * 1024);
  EXPECT_THROW(b.create(64 * 1024), OutOfMemory);
  PhysicalHandle h3 = b.create(64 * 1024);
  EXPECT_EQ(b.calls(BackendOp::kCreate), 3);
  b.fail_on(BackendOp::kRelease, 1);
  EXPECT_THROW(b.release(h1), DriverError);
  b.release(h1);
  b.release(h3);
}

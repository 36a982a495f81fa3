#include "kvpager/vmm/host_backend.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "kvpager/common/error.hpp"

using namespace kvpager;
using namespace kvpager::vmm;

namespace {
constexpr size_t kGran = 64 * 1024;
HostBackendConfig small() {
  return HostBackendConfig{kGran, 16 * kGran};
}
}  // namespace

TEST(HostBackend, MapWriteUnmapRemapKeepsContentsOfTheHandle) {
  HostBackend b(small());
  const uintptr_t va = b.reserve(4 * kGran, kGran);
  ASSERT_EQ(va % kGran, 0u);
  PhysicalHandle h = b.create(kGran);
  b.map(va + kGran, kGran, h, 0);
  b.set_access(va + kGran, kGran, Access::kReadWrite);
  std::memset(reinterpret_cast<void*>(va + kGran), 0x5a, kGran);
  b.unmap(va + kGran, kGran);
  // Same handle at another address shows the same bytes: memory lives with the handle.
  b.map(va + 3 * kGran, kGran, h, 0);
  b.set_access(va + 3 * kGran, kGran, Access::kReadOnly);
  const auto* p = reinterpret_cast<const unsigned char*>(va + 3 * kGran);
  EXPECT_EQ(p[0], 0x5a);
  EXPECT_EQ(p[kGran - 1], 0x5a);
  b.unmap(va + 3 * kGran, kGran);
  b.release(h);
  b.free_reservation(va, 4 * kGran);
}

TEST(HostBackend, RefusesMisuseLikeTheDriver) {
  HostBackend b(small());
  const uintptr_t va = b.reserve(2 * kGran, kGran);
  PhysicalHandle h = b.create(kGran);
  EXPECT_THROW(b.map(va + 1, kGran, h, 0), InvalidArgument);          // unaligned
  EXPECT_THROW(b.map(va + 2 * kGran, kGran, h, 0), InvalidArgument);  // outside reservation
  EXPECT_THROW(b.set_access(va, kGran, Access::kReadWrite), InvalidArgument);  // not mapped
  b.map(va, kGran, h, 0);
  EXPECT_THROW(b.map(va, kGran, h, 0), InvalidArgument);             // mapped twice
  EXPECT_THROW(b.free_reservation(va, 2 * kGran), InvalidArgument);  // still mapped
  b.unmap(va, kGran);
  EXPECT_THROW(b.unmap(va, kGran), InvalidArgument);  // not mapped
  b.release(h);
  b.free_reservation(va, 2 * kGran);
}

TEST(HostBackend, CapacityIsEnforcedAsOutOfMemory) {
  HostBackend b(small());
  std::vector<PhysicalHandle> hs;
  for (int i = 0; i < 16; ++i) hs.push_back(b.create(kGran));
  EXPECT_EQ(b.memory_info().free_bytes, 0u);
  EXPECT_THROW(b.create(kGran), OutOfMemory);
  b.release(hs.back());
  hs.pop_back();
  EXPECT_NO_THROW(hs.push_back(b.create(kGran)));
  for (auto h : hs) b.release(h);
  EXPECT_EQ(b.memory_info().free_bytes, 16 * kGran);
}

TEST(HostBackend, UnmappedRangeFaults) {
  HostBackend b(small());
  const uintptr_t va = b.reserve(kGran, kGran);
  PhysicalHandle h = b.create(kGran);
  b.map(va, kGran, h, 0);
  b.set_access(va, kGran, Access::kReadWrite);
  b.unmap(va, kGran);
  EXPECT_DEATH(*reinterpret_cast<volatile char*>(va) = 1, "");
  b.release(h);
  b.free_reservation(va, kGran);
}

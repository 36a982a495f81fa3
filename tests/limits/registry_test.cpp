// The registry inside one process: validation, accounting against the instance limit and the
// device budget, control through Registry, and a KvCache following its registry entry.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <memory>

#include "kv/kv_test_support.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry.hpp"
#include "limits/registry_test_support.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::limits;
using namespace kvpager::testing;

namespace {

InstanceSpec spec(const std::string& name, uint64_t limit = format::kUnlimited) {
  return InstanceSpec{name, "llama-test", "host0", 1ull << 30, limit};
}

kv::KvCacheConfig linked_config(std::shared_ptr<InstanceRegistration> reg, size_t max_idle) {
  kv::KvCacheConfig c = small_cache_config(kv::KvLayout::kInterleaved, 512, true);
  c.max_idle_pages = max_idle;
  c.registry_link = std::move(reg);
  return c;
}

}  // namespace

TEST(RegistryConfig, ValidatesNamesBudgetsAndPercentages) {
  EXPECT_TRUE(is_valid_instance_name("llama-8b_0.v2"));
  for (const char* bad : {"", "a/b", "..", "a..b", ".hidden", "-x", "sp ace", "\xff"}) {
    EXPECT_FALSE(is_valid_instance_name(bad)) << bad;
  }
  EXPECT_FALSE(is_valid_instance_name(std::string(64, 'a')));
  EXPECT_TRUE(is_valid_instance_name(std::string(63, 'a')));
  EXPECT_THROW(validate_device_label("cuda:0"), InvalidArgument);
  EXPECT_EQ(parse_budget("0.5", 1000), 500u);
  EXPECT_EQ(parse_budget("25%", 1000), 250u);
  EXPECT_EQ(parse_budget("2G", 1000), 2 * GiB);
  EXPECT_EQ(parse_budget("4096", 1000), 4096u);
  for (const char* bad : {"0", "0%", "101%", "-1G", "12XB", "", "%", "1.2.3"}) {
    EXPECT_THROW(parse_budget(bad, 1000), InvalidArgument) << bad;
  }
  EXPECT_DOUBLE_EQ(parse_percent("12.5%"), 0.125);
  EXPECT_DOUBLE_EQ(parse_percent("100"), 1.0);
  EXPECT_THROW(parse_percent("101%"), InvalidArgument);
  EXPECT_THROW(parse_percent("-5"), InvalidArgument);
  RegistryConfig c;
  c.prefix = "a/b";
  EXPECT_THROW(validate_registry_config(c), InvalidArgument);
  c.prefix = "ok-";
  c.mode = 0644 & ~0200;
  EXPECT_THROW(validate_registry_config(c), InvalidArgument);
}

TEST(InstanceRegistration, ChargesStayWithinInstanceLimitAndDeviceBudget) {
  ScopedRegistry reg("charge");
  reg.config.gpu_utilization = "10M";
  auto a = InstanceRegistration::create(reg.config, spec("a", 6 * MiB));
  auto b = InstanceRegistration::create(reg.config, spec("b"));
  EXPECT_EQ(a->device_budget().budget_bytes(), 10 * MiB);
  EXPECT_TRUE(a->try_charge(4 * MiB));
  EXPECT_EQ(a->headroom_bytes(), 2 * MiB);  // its own limit binds
  EXPECT_EQ(b->headroom_bytes(), 6 * MiB);  // the device budget less a's charge
  EXPECT_FALSE(a->try_charge(3 * MiB));     // instance limit 6 MiB
  EXPECT_TRUE(b->try_charge(6 * MiB));
  EXPECT_EQ(a->headroom_bytes(), 0u);    // b took the rest of the device budget
  EXPECT_FALSE(b->try_charge(1 * MiB));  // device budget 10 MiB
  EXPECT_FALSE(a->try_charge(1 * MiB));
  EXPECT_EQ(a->device_budget().snapshot_locked().charged_bytes, 10 * MiB);
  b->uncharge(2 * MiB);
  EXPECT_TRUE(a->try_charge(2 * MiB));
  EXPECT_EQ(a->charged_bytes(), 6 * MiB);

  const RegistrySnapshot snap = Registry(reg.config).scan();
  ASSERT_EQ(snap.instances.size(), 2u);
  EXPECT_EQ(snap.instances[0].record.mapped_bytes, 6 * MiB);
  EXPECT_EQ(snap.instances[1].record.mapped_bytes, 4 * MiB);
  ASSERT_EQ(snap.devices.size(), 1u);
  EXPECT_EQ(snap.devices[0].record.charged_bytes, 10 * MiB);
  EXPECT_EQ(snap.devices[0].live_members, 2u);
  a->uncharge(6 * MiB);
  b->uncharge(4 * MiB);
}

TEST(InstanceRegistration, SegmentsAreOwnerOnlyUnlessTheModeWidensThem) {
  ScopedRegistry reg("mode");
  const mode_t old = ::umask(0);  // the mode must not depend on the umask either way
  auto a = InstanceRegistration::create(reg.config, spec("private"));
  struct stat st {};
  ASSERT_EQ(::stat(reg.path("inst-private").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(reg.path("dev-host0").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  reg.config.mode = 0660;
  auto b = InstanceRegistration::create(reg.config, spec("group"));
  ASSERT_EQ(::stat(reg.path("inst-group").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ::umask(old);
}

TEST(DeviceBudget, AFullSlotTableMakesRoomByReclaimingDeadMembers) {
  ScopedRegistry reg("slots");
  DeviceBudget dev = DeviceBudget::open_or_create(reg.config, "host0", GiB);
  const ProcessIdentity dead{INT32_MAX - 1, 1};  // no such process
  for (uint32_t i = 0; i < format::kMaxSlots; ++i) {
    dev.join("dead" + std::to_string(i), dead);
  }
  EXPECT_EQ(Registry(reg.config).scan().devices[0].record.members.size(), format::kMaxSlots);
  const uint32_t slot = dev.join("alive", current_process());
  EXPECT_LT(slot, format::kMaxSlots);
  EXPECT_EQ(Registry(reg.config).scan().devices[0].record.members.size(), 1u);
}

TEST(InstanceRegistration, NamesAreUniqueWhileTheOwnerLivesAndFilesGoWithIt) {
  ScopedRegistry reg("unique");
  {
    auto a = InstanceRegistration::create(reg.config, spec("same"));
    EXPECT_THROW(InstanceRegistration::create(reg.config, spec("same")), StateError);
    EXPECT_THROW(InstanceRegistration::create(reg.config, spec("bad/name")), InvalidArgument);
    EXPECT_EQ(::access(reg.path("inst-same").c_str(), F_OK), 0);
  }
  EXPECT_NE(::access(reg.path("inst-same").c_str(), F_OK), 0);
  auto again = InstanceRegistration::create(reg.config, spec("same"));
  EXPECT_EQ(Registry(reg.config).scan().devices[0].record.members.size(), 1u);
}

TEST(Registry, ControlValidatesBeforeChangingAnything) {
  ScopedRegistry reg("control");
  reg.config.gpu_utilization = "1G";
  auto a = InstanceRegistration::create(reg.config, spec("ctl"));
  Registry r(reg.config);
  EXPECT_THROW(r.set_limit("nobody", MiB), InvalidArgument);
  EXPECT_THROW(r.set_limit("../etc", MiB), InvalidArgument);
  EXPECT_THROW(r.set_budget("cuda7", "1G"), InvalidArgument);
  EXPECT_THROW(r.set_budget("host0", "101%"), InvalidArgument);
  EXPECT_THROW(r.limit_for_percent("ctl", "150"), InvalidArgument);
  EXPECT_EQ(a->device_budget().budget_bytes(), GiB);
  EXPECT_EQ(a->instance_limit_bytes(), format::kUnlimited);

  EXPECT_EQ(r.resolve_device("host:0"), "host0");
  EXPECT_EQ(r.resolve_device("0"), "host0");
  EXPECT_EQ(r.set_budget("0", "50%"), GiB / 2);
  EXPECT_EQ(a->device_budget().budget_bytes(), GiB / 2);
  r.set_limit("ctl", 3 * MiB);
  EXPECT_EQ(a->instance_limit_bytes(), 3 * MiB);
  EXPECT_TRUE(a->poll({}).limit_changed);
  EXPECT_FALSE(a->poll({}).limit_changed);
  EXPECT_EQ(r.limit_for_percent("ctl", "25%"), GiB / 4);
  EXPECT_THROW(r.remove("ctl", false), StateError);  // alive
}

TEST(KvCacheRegistry, LoweredLimitUnmapsFreePagesAndKeepsBlocksInUse) {
  ScopedRegistry reg("follow");
  auto link = InstanceRegistration::create(reg.config, spec("follow"));
  kv::KvCache cache(test_host_backend(), linked_config(link, 1000));
  const uint64_t page = cache.stats().page_bytes;
  auto keep = cache.alloc(8);
  auto drop = cache.alloc(60);
  cache.free(drop);  // ~30 free pages stay mapped (max_idle_pages is high)
  ASSERT_TRUE(
      wait_until([&] { return Registry(reg.config).scan().instances[0].record.used_bytes > 0; }));
  const uint64_t in_use = cache.stats().in_use_bytes;
  ASSERT_GT(link->charged_bytes(), in_use + 10 * page);

  const uint64_t limit = in_use + 2 * page;
  Registry(reg.config).set_limit("follow", limit);
  ASSERT_TRUE(wait_until([&] { return link->charged_bytes() <= limit; }))
      << link->charged_bytes() << " > " << limit;
  for (auto b : keep) EXPECT_TRUE(cache.is_allocated(b));
  EXPECT_EQ(cache.stats().in_use_bytes, in_use);
  EXPECT_THROW(cache.alloc(60), OutOfMemory);  // past the limit: refused
  Registry(reg.config).set_limit("follow", format::kUnlimited);
  auto more = cache.alloc(60);  // raised: effective on the next allocation
  cache.free(more);
  cache.free(keep);
}

// Two linked caches under a 4 MiB device budget (64 pages of 64 KiB); `idle` holds 40 free
// pages (mapped, no block in use: max_idle_pages is high).
struct IdleAndOther {
  explicit IdleAndOther(const char* tag) : reg(tag) {
    reg.config.gpu_utilization = "4M";
    idle_link = InstanceRegistration::create(reg.config, spec("idle"));
    other_link = InstanceRegistration::create(reg.config, spec("other"));
    idle = std::make_unique<kv::KvCache>(test_host_backend(), linked_config(idle_link, 1000));
    other = std::make_unique<kv::KvCache>(test_host_backend(), linked_config(other_link, 1000));
    idle->free(idle->alloc(80));
  }
  ScopedRegistry reg;
  std::shared_ptr<InstanceRegistration> idle_link, other_link;
  std::unique_ptr<kv::KvCache> idle, other;
};

TEST(KvCacheRegistry, DevicePressureMakesAnIdleInstanceGiveBackFreePages) {
  IdleAndOther t("pressure");
  // The busy one needs 50 pages: refused at first, served once the idle one has shed.
  std::vector<BlockId> got;
  ASSERT_TRUE(wait_until([&] {
    try {
      got = t.other->alloc(100);
      return true;
    } catch (const OutOfMemory&) {
      return false;
    }
  }));
  EXPECT_LE(t.idle_link->charged_bytes() + t.other_link->charged_bytes(), 4 * MiB);
  t.other->free(got);
}

TEST(KvCacheRegistry, AWaitingInstanceAsksForRoomAndAnIdleOneGivesItBack) {
  IdleAndOther t("ask");
  kv::KvCache& waiting = *t.other;
  // The waiting one counts what the idle one holds as not its own...
  const kv::KvCacheStats before = waiting.stats();
  ASSERT_LT(before.available_blocks, 60u);
  EXPECT_GE(before.available_within_limit_blocks, 100u);
  // ...and, without ever being refused, gets it back by asking.
  waiting.ask_for_room();
  ASSERT_TRUE(wait_until([&] { return waiting.available() >= 100; }))
      << waiting.available() << " blocks available, idle holds " << t.idle_link->charged_bytes();
  // The idle one sheds page by page on its own thread: all of them, not just what was needed.
  EXPECT_TRUE(wait_until([&] { return t.idle->stats().free_pages == 0; }))
      << t.idle->stats().free_pages << " free pages still mapped";
}

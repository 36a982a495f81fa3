// The registry inside one process: validation, accounting against the instance limit and the
// device budget, control through Registry, and a KvCache following its registry entry.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <thread>

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

TEST(InstanceRegistration, PressureFromOthersNeverCountsItsOwnRefusalsOrAsks) {
  ScopedRegistry reg("pressure-own");
  reg.config.gpu_utilization = "4M";
  auto a = InstanceRegistration::create(reg.config, spec("a"));
  ASSERT_TRUE(a->try_charge(4 * MiB));
  auto b = InstanceRegistration::create(reg.config, spec("b"));
  const uint64_t before = a->device_budget().pressure();
  EXPECT_FALSE(a->try_charge(1 * MiB));  // its own refusals and asks move the counter...
  a->ask_for_room(1 * MiB);
  EXPECT_EQ(a->device_budget().pressure(), before + 2);
  EXPECT_EQ(a->pressure_from_others(), 0u);  // ...but not what it reads as others' pressure
  EXPECT_EQ(b->pressure_from_others(), 2u);
  EXPECT_FALSE(b->try_charge(1 * MiB));
  b->ask_for_room(1 * MiB);
  EXPECT_EQ(a->pressure_from_others(), 2u);
  EXPECT_EQ(b->pressure_from_others(), 2u);
  a->uncharge(4 * MiB);
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

// Guaranteed shares (DeviceBudget: guarantees, claims, what borrowers owe).
namespace {

InstanceSpec guaranteed(const std::string& name, uint64_t guarantee) {
  InstanceSpec s = spec(name);
  s.guarantee_bytes = guarantee;
  return s;
}

}  // namespace

TEST(DeviceBudget, GuaranteesSumToAtMostTheBudget) {
  ScopedRegistry reg("guarantee-sum");
  reg.config.gpu_utilization = "10M";
  auto a = InstanceRegistration::create(reg.config, guaranteed("a", 6 * MiB));
  EXPECT_EQ(a->guarantee_bytes(), 6 * MiB);
  try {
    InstanceRegistration::create(reg.config, guaranteed("b", 5 * MiB));
    ADD_FAILURE() << "a guarantee past the budget was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos) << e.what();
  }
  auto b = InstanceRegistration::create(reg.config, guaranteed("b", 4 * MiB));
  EXPECT_THROW(a->set_guarantee(7 * MiB), InvalidArgument);
  EXPECT_EQ(a->guarantee_bytes(), 6 * MiB);  // unchanged by the refusal
  EXPECT_THROW(a->device_budget().set_budget(9 * MiB), InvalidArgument);
  b->set_guarantee(0);
  a->device_budget().set_budget(9 * MiB);  // 6 MiB guaranteed now: fits
  EXPECT_EQ(a->device_budget().budget_bytes(), 9 * MiB);
  b.reset();  // a leaving member's guarantee goes with it
  auto c = InstanceRegistration::create(reg.config, guaranteed("c", 3 * MiB));
  EXPECT_EQ(c->guarantee_bytes(), 3 * MiB);
}

TEST(DeviceBudget, AClaimKeepsBorrowersOutOfAGuaranteeAndMakesThemOweIt) {
  ScopedRegistry reg("claim");
  reg.config.gpu_utilization = "10M";
  reg.config.claim_ttl = std::chrono::milliseconds(10'000);  // lives through the test
  auto owner = InstanceRegistration::create(reg.config, guaranteed("owner", 5 * MiB));
  auto borrower = InstanceRegistration::create(reg.config, spec("borrower"));
  // The owner needs nothing yet: its guarantee is free for anyone to borrow.
  ASSERT_TRUE(borrower->try_charge(8 * MiB));
  EXPECT_EQ(borrower->device_budget().owed_by(borrower->slot()), 0u);
  // The owner wants 4 MiB and is refused (2 MiB free): it claims those 4 MiB, not all 5.
  DeviceBudget& dev = owner->device_budget();
  EXPECT_FALSE(owner->try_charge(4 * MiB));
  EXPECT_EQ(dev.claimed_by_others(borrower->slot()), 4 * MiB);
  EXPECT_EQ(owner->headroom_bytes(), 2 * MiB);
  EXPECT_EQ(borrower->headroom_bytes(), 0u);    // 2 MiB free, all of it claimed
  EXPECT_FALSE(borrower->try_charge(1 * MiB));  // the budget alone would allow it
  // The claim lacks 2 MiB beyond what is free: the borrower owes that much.
  EXPECT_EQ(dev.owed_by(borrower->slot()), 2 * MiB);
  borrower->uncharge(2 * MiB);
  EXPECT_EQ(dev.owed_by(borrower->slot()), 0u);
  // Asking for more while the claim lives raises it, up to the guarantee; asking for less
  // does not lower it.
  owner->ask_for_room(8 * MiB);
  EXPECT_EQ(dev.claimed_by_others(borrower->slot()), 5 * MiB);
  owner->ask_for_room(1 * MiB);
  EXPECT_EQ(dev.claimed_by_others(borrower->slot()), 5 * MiB);
  EXPECT_EQ(dev.owed_by(borrower->slot()), 1 * MiB);
  borrower->uncharge(1 * MiB);
  ASSERT_TRUE(owner->try_charge(4 * MiB));
  // 1 MiB free, and the owner still lacks 1 MiB of its claim: the borrower stays out...
  EXPECT_FALSE(borrower->try_charge(1 * MiB));
  // ...until the owner has what it claimed, which ends the claim.
  ASSERT_TRUE(owner->try_charge(1 * MiB));
  EXPECT_EQ(dev.claimed_by_others(borrower->slot()), 0u);
  owner->uncharge(2 * MiB);
  EXPECT_TRUE(borrower->try_charge(2 * MiB));
  owner->uncharge(3 * MiB);
  borrower->uncharge(7 * MiB);
}

TEST(DeviceBudget, AClaimMetBelowTheGuaranteeEndsAndLendsTheRestAgain) {
  ScopedRegistry reg("sized");
  reg.config.gpu_utilization = "10M";
  reg.config.claim_ttl = std::chrono::milliseconds(10'000);
  auto owner = InstanceRegistration::create(reg.config, guaranteed("owner", 6 * MiB));
  auto borrower = InstanceRegistration::create(reg.config, spec("borrower"));
  DeviceBudget& dev = owner->device_budget();
  ASSERT_TRUE(borrower->try_charge(9 * MiB));
  // One request's worth (2 MiB) is refused: the borrower owes 1 MiB, not the 5 MiB beyond
  // what is free that the whole guarantee would take.
  EXPECT_FALSE(owner->try_charge(2 * MiB));
  EXPECT_EQ(dev.owed_by(borrower->slot()), 1 * MiB);
  borrower->uncharge(1 * MiB);
  ASSERT_TRUE(owner->try_charge(2 * MiB));
  // Met at 2 MiB of 6 guaranteed: nothing is claimed any more and the borrower may grow again
  // into what the owner does not use.
  EXPECT_EQ(dev.claimed_by_others(borrower->slot()), 0u);
  owner->uncharge(1 * MiB);
  EXPECT_TRUE(borrower->try_charge(1 * MiB));
  owner->uncharge(1 * MiB);
  borrower->uncharge(9 * MiB);
}

TEST(DeviceBudget, AClaimLapsesWhenTheOwnerStopsAskingOrGetsNothingForTooLong) {
  ScopedRegistry reg("lapse");
  reg.config.gpu_utilization = "10M";
  reg.config.claim_ttl = std::chrono::milliseconds(50);
  reg.config.claim_patience = std::chrono::milliseconds(300);
  auto owner = InstanceRegistration::create(reg.config, guaranteed("owner", 5 * MiB));
  auto borrower = InstanceRegistration::create(reg.config, spec("borrower"));
  ASSERT_TRUE(borrower->try_charge(8 * MiB));
  // The owner stops asking: its claim lapses after the TTL.
  EXPECT_FALSE(owner->try_charge(4 * MiB));
  EXPECT_FALSE(borrower->try_charge(1 * MiB));
  EXPECT_TRUE(wait_until([&] { return borrower->try_charge(1 * MiB); }));
  borrower->uncharge(1 * MiB);
  // The owner keeps asking but never gets memory: after the patience the borrower may charge
  // again (its running work may need that memory to finish and free the rest).
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(owner->try_charge(4 * MiB));
  bool borrowed = false;
  while (!borrowed && std::chrono::steady_clock::now() - start < std::chrono::seconds(5)) {
    owner->ask_for_room(0);  // renews the claim
    borrowed = borrower->try_charge(1 * MiB);
    if (!borrowed) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(borrowed);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  // Asking on, the owner's claim comes back a patience later: the borrower is held back again.
  bool held_back = false;
  while (!held_back && std::chrono::steady_clock::now() - start < std::chrono::seconds(5)) {
    owner->ask_for_room(0);
    if (borrower->try_charge(1 * MiB)) {
      borrower->uncharge(1 * MiB);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } else {
      held_back = true;
    }
  }
  EXPECT_TRUE(held_back);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(600));
  borrower->uncharge(9 * MiB);
}

TEST(DeviceBudget, BorrowersOweAClaimInProportionToWhatTheyBorrow) {
  ScopedRegistry reg("split");
  reg.config.gpu_utilization = "10M";
  reg.config.claim_ttl = std::chrono::milliseconds(10'000);
  auto owner = InstanceRegistration::create(reg.config, guaranteed("owner", 4 * MiB));
  auto big = InstanceRegistration::create(reg.config, spec("big"));
  auto small = InstanceRegistration::create(reg.config, guaranteed("small", 1 * MiB));
  ASSERT_TRUE(big->try_charge(6 * MiB));     // borrows 6 MiB
  ASSERT_TRUE(small->try_charge(4 * MiB));   // borrows 3 MiB beyond its own guarantee
  EXPECT_FALSE(owner->try_charge(4 * MiB));  // the budget is full: it claims those 4 MiB
  DeviceBudget& dev = owner->device_budget();
  const uint64_t from_big = dev.owed_by(big->slot()), from_small = dev.owed_by(small->slot());
  EXPECT_EQ(dev.owed_by(owner->slot()), 0u);
  // 4 MiB short, split 6:3 (rounded up): neither gives back the whole of it
  EXPECT_GE(from_big + from_small, 4 * MiB);
  EXPECT_LE(from_big + from_small, 4 * MiB + 2);
  EXPECT_NEAR(static_cast<double>(from_big) / static_cast<double>(from_small), 2.0, 1e-5);
  big->uncharge(6 * MiB);
  small->uncharge(4 * MiB);
}

// KvCache over the registry: 64 pages of 64 KiB (2 blocks each) under a 4 MiB budget, `owner`
// guaranteed half. No reserve and no ready handles, so each cache's charge is exactly its
// mapped pages; each maps page 0 for its null block (block 0) and block 1.
TEST(KvCacheRegistry, ABorrowerUnmapsWhatItOwesAndAnOwnerKeepsItsGuarantee) {
  ScopedRegistry reg("owe");
  reg.config.gpu_utilization = "4M";
  reg.config.claim_ttl = std::chrono::milliseconds(10'000);  // lives through the test
  auto owner_link = InstanceRegistration::create(reg.config, guaranteed("owner", 2 * MiB));
  auto borrower_link = InstanceRegistration::create(reg.config, spec("borrower"));
  auto config = [](std::shared_ptr<InstanceRegistration> link) {
    kv::KvCacheConfig c = linked_config(std::move(link), 1000);
    c.reserve_pages = 0;
    c.pool_min_ready = 0;
    c.pool_max_ready = 0;
    return c;
  };
  kv::KvCache owner(test_host_backend(), config(owner_link));
  kv::KvCache borrower(test_host_backend(), config(borrower_link));
  ASSERT_EQ(owner.stats().page_bytes, 64 * KiB);
  ASSERT_EQ(owner.stats().max_blocks_per_page, 2u);
  EXPECT_EQ(owner.stats().guarantee_bytes, 2 * MiB);
  EXPECT_EQ(borrower.stats().guarantee_bytes, 0u);

  // The owner keeps 20 free pages (21 mapped), within its guarantee: pressure from the borrower
  // leaves them.
  owner.free(owner.alloc(40));
  auto held = borrower.alloc(60);                 // 31 pages
  EXPECT_THROW(borrower.alloc(30), OutOfMemory);  // 15 more: 12 left
  borrower.ask_for_room();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // The refused alloc mapped pages and rolled them back; their handles go back through the
  // pool, which releases (uncharges) them on its own thread.
  const uint64_t page = 64 * KiB;
  ASSERT_TRUE(wait_until([&] { return borrower_link->charged_bytes() == 31 * page; }))
      << borrower_link->charged_bytes() / page << " pages charged";
  EXPECT_EQ(owner.stats().free_pages, 20u) << "an instance within its guarantee shed its pages";
  auto more = borrower.alloc(24);  // the 12 left: the budget is full

  // The borrower frees 20 pages' worth; they stay mapped (max_idle_pages is high).
  borrower.free(std::span<const BlockId>(held).subspan(1, 40));  // blocks 2..41: pages 1..20
  held.erase(held.begin() + 1, held.begin() + 41);
  ASSERT_EQ(borrower.stats().free_pages, 20u);
  // The owner needs 10 pages beyond its free ones: refused, it claims those 10 (not the 11 its
  // guarantee lacks); the borrower owes them and unmaps that many free pages.
  auto first = owner.alloc(40);
  std::vector<BlockId> got;
  ASSERT_TRUE(wait_until([&] {
    try {
      got = owner.alloc(20);
      return true;
    } catch (const OutOfMemory&) {
      return false;
    }
  })) << "borrower still holds "
      << borrower_link->charged_bytes() << " B";
  EXPECT_EQ(borrower.stats().blocks_in_use, 44u);  // blocks in use are never taken
  // (The owner's refusals were pressure too: the borrower, guaranteed nothing, sheds every free
  // page; let it finish, or a page it unmaps after `spare` is read below goes missing.)
  // Handles of refused or unmapped pages go back through the pools, which release them on
  // their own threads: wait until each charge is exactly its mapped pages.
  ASSERT_TRUE(wait_until([&] {
    const kv::KvCacheStats s = borrower.stats();
    return s.owed_bytes == 0 && s.free_pages == 0 &&
           borrower_link->charged_bytes() == s.mapped_bytes &&
           owner_link->charged_bytes() == owner.stats().mapped_bytes;
  }));
  // The owner has what it claimed, a page short of its guarantee: the claim ended, and the
  // borrower's room is the whole free budget again.
  const uint64_t charged = owner_link->charged_bytes() + borrower_link->charged_bytes();
  ASSERT_EQ(owner_link->charged_bytes(), 31 * page);
  const uint64_t free = 4 * MiB - charged;
  EXPECT_EQ(owner_link->headroom_bytes(), free);
  EXPECT_EQ(borrower_link->headroom_bytes(), free);
  const size_t spare = borrower.stats().free_pages;
  const size_t room = free / page;
  EXPECT_THROW(borrower.alloc(2 * (spare + room + 1)), OutOfMemory);
  EXPECT_EQ(borrower.alloc(2 * (spare + room)).size(), 2 * (spare + room));
  owner.free(first);
  owner.free(got);
}

namespace {

void copy_file(const std::string& from, const std::string& to) {
  std::string why;
  const auto bytes = read_file_copy(from, 1 << 16, &why);
  ASSERT_TRUE(bytes) << why;
  FILE* f = std::fopen(to.c_str(), "wb");
  ASSERT_NE(f, nullptr) << to;
  ASSERT_EQ(std::fwrite(bytes->words.data(), 1, bytes->size, f), bytes->size);
  std::fclose(f);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

TEST(Registry, WritersRefuseACopyOfAnotherInstancesSegment) {
  ScopedRegistry reg("alias");
  reg.config.gpu_utilization = "1G";
  auto real = InstanceRegistration::create(reg.config, spec("real"));
  copy_file(reg.path("inst-real"), reg.path("inst-alias"));  // cp inst-real inst-alias
  Registry r(reg.config);
  for (const auto& change : std::vector<std::function<void()>>{
           [&] { r.set_guarantee("alias", 100 * MiB); }, [&] { r.set_limit("alias", 10 * MiB); },
           [&] { r.limit_for_percent("alias", "10"); }, [&] { r.remove("alias", true); }}) {
    try {
      change();
      ADD_FAILURE() << "a copy named alias was trusted";
    } catch (const StateError& e) {
      EXPECT_NE(std::string(e.what()).find("names instance 'real', not its file name"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(real->guarantee_bytes(), 0u);  // the real instance is untouched
  EXPECT_EQ(real->instance_limit_bytes(), format::kUnlimited);
  EXPECT_TRUE(exists(reg.path("inst-alias")));        // not deleted either (delete --force)
  EXPECT_EQ(r.set_guarantee("real", 100 * MiB), 0u);  // the real name still works
  EXPECT_EQ(real->guarantee_bytes(), 100 * MiB);
}

TEST(Registry, GcRemovesOnlyWhatACreatorLeftBehind) {
  ScopedRegistry reg("gc-tmp");
  auto live = InstanceRegistration::create(reg.config, spec("live"));
  // A pid that is surely dead: a reaped child's.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  const std::string tmp = ".tmp." + std::to_string(child);
  auto write = [&](const std::string& rest, const std::string& bytes) {
    FILE* f = std::fopen(reg.path(rest).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  };
  // What a creator that died leaves: zeros (not yet initialised), or a started segment.
  write("inst-half" + tmp, std::string(sizeof(format::InstanceSegment), '\0'));
  copy_file(reg.path("dev-host0"), reg.path("dev-host0" + tmp));
  write("inst-empty" + tmp, "");
  // Not left by a creator: other names, other content, larger than a segment.
  write("notes" + tmp, "keep me");
  write("inst-text" + tmp, "precious user data");
  write("inst-big" + tmp, std::string(sizeof(format::InstanceSegment) + 1, '\0'));
  const GcReport report = Registry(reg.config).gc();
  EXPECT_EQ(report.removed_temporaries.size(), 3u);
  EXPECT_FALSE(exists(reg.path("inst-half" + tmp)));
  EXPECT_FALSE(exists(reg.path("dev-host0" + tmp)));
  EXPECT_FALSE(exists(reg.path("inst-empty" + tmp)));
  for (const char* kept : {"notes", "inst-text", "inst-big"}) {
    EXPECT_TRUE(exists(reg.path(kept + tmp))) << kept;
    bool reported = false;
    for (const auto& s : report.skipped) {
      reported = reported || (s.path == reg.path(kept + tmp) && !s.reason.empty());
    }
    EXPECT_TRUE(reported) << kept;
  }
  EXPECT_TRUE(exists(reg.path("inst-live")));
}

TEST(KvCacheRegistry, AnInstanceAboveItsLimitReleasesReadyHandlesAfterFrees) {
  using namespace std::chrono_literals;
  ScopedRegistry reg("limit-ready");
  auto link = InstanceRegistration::create(reg.config, spec("over"));
  kv::KvCacheConfig c = linked_config(link, 4);
  c.idle_release_ms = 20;
  kv::KvCache cache(test_host_backend(), c);
  const uint64_t page = cache.stats().page_bytes;
  auto held = cache.alloc(60);         // 30 pages in use
  std::this_thread::sleep_for(100ms);  // the idle release has fired and will not again
  const uint64_t limit = 16 * page;    // below what is in use
  Registry(reg.config).set_limit("over", limit);
  // Let every one-shot release run (the limit change's, the idle one) before the frees.
  std::this_thread::sleep_for(200ms);
  cache.free(std::span<const BlockId>(held.data(), 32));  // 14 pages stay in use
  // The pages above the limit are unmapped; their handles must not stay ready, charged.
  EXPECT_TRUE(wait_until([&] { return link->charged_bytes() <= limit; }, 2s))
      << link->charged_bytes() / page << " pages charged, " << cache.stats().pool.ready
      << " ready, " << cache.stats().mapped_pages << " mapped, limit 16";
  std::this_thread::sleep_for(50ms);
  EXPECT_LE(link->charged_bytes(), limit);  // and it stays so
  cache.free(std::span<const BlockId>(held.data() + 32, held.size() - 32));
}

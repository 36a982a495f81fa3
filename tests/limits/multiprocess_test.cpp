// The registry across real processes (limits_test_helper on the host backend): one budget
// bounds several allocating processes at every sampled instant; a limit lowered with
// `kvpager limit` is honoured promptly; a process killed holding the device lock, or killed
// mid-allocation, blocks nobody, and `kvpager gc` reclaims what it held.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <thread>

#include "kvpager/common/units.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry.hpp"
#include "kvpager/limits/robust_mutex.hpp"
#include "limits/child_process.hpp"
#include "limits/registry_test_support.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::limits;
using namespace kvpager::testing;
using namespace std::chrono_literals;

namespace {

const std::string kHelper = KVPAGER_LIMITS_HELPER;

std::unique_ptr<ChildProcess> helper(const ScopedRegistry& reg, std::vector<std::string> args) {
  args.insert(args.begin(), kHelper);
  return std::make_unique<ChildProcess>(args, reg.env);
}

DeviceBudget make_device(const ScopedRegistry& reg, const std::string& budget) {
  RegistryConfig c = reg.config;
  c.gpu_utilization = budget;
  return DeviceBudget::open_or_create(c, "host0", 64 * GiB);
}

InstanceRecord instance(const ScopedRegistry& reg, const std::string& name) {
  for (const auto& s : Registry(reg.config).scan().instances) {
    if (s.record.name == name) return s.record;
  }
  return {};
}

}  // namespace

TEST(LimitsMultiprocess, SumOfChargesNeverExceedsTheDeviceBudget) {
  ScopedRegistry reg("budget");
  DeviceBudget device = make_device(reg, "6M");  // 96 pages of 64 KiB for four processes
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int i = 0; i < 4; ++i) {
    kids.push_back(helper(reg, {"churn", "churn" + std::to_string(i), "3", std::to_string(i + 1)}));
  }
  for (auto& k : kids) ASSERT_EQ(k->read_line(), "ready") << k->read_stderr();
  for (auto& k : kids) k->send("go");
  uint64_t samples = 0, peak = 0, peak_published = 0;
  const auto end = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < end) {
    const DeviceRecord d = device.snapshot_locked();  // consistent: taken under the lock
    ASSERT_LE(d.charged_bytes, d.budget_bytes);
    peak = std::max(peak, d.charged_bytes);
    // What the instances publish never runs ahead of their charge.
    uint64_t published = 0;
    for (const auto& s : Registry(reg.config).scan().instances) published += s.record.mapped_bytes;
    peak_published = std::max(peak_published, published);
    ++samples;
  }
  uint64_t refused = 0;
  for (auto& k : kids) {
    const std::string done = k->read_line(10s);
    ASSERT_EQ(done.rfind("done", 0), 0u) << done << k->read_stderr();
    refused += std::stoull(done.substr(done.find("refused=") + 8));
    EXPECT_EQ(k->wait(), 0);
  }
  std::printf("%llu samples, peak %s of %s, %llu allocations refused\n",
              static_cast<unsigned long long>(samples), format_size(peak).c_str(),
              format_size(device.budget_bytes()).c_str(), static_cast<unsigned long long>(refused));
  EXPECT_GT(samples, 10u);
  EXPECT_GT(refused, 0u);  // the budget was really contended
  EXPECT_LE(peak_published, device.budget_bytes() + 4 * 64 * KiB * 16);  // copies lag by a poll
  EXPECT_EQ(device.snapshot_locked().charged_bytes, 0u);  // everyone gave everything back
}

TEST(LimitsMultiprocess, LimitLoweredFromTheCliIsHonouredPromptly) {
  const std::string kvpager = kvpager_binary();
  ASSERT_FALSE(kvpager.empty()) << "KVPAGER_BINARY is not set";
  ScopedRegistry reg("cli-limit");
  auto kid = helper(reg, {"serve", "svc", "1000"});
  ASSERT_EQ(kid->read_line(), "ready") << kid->read_stderr();
  kid->send("alloc 10");
  ASSERT_EQ(kid->read_line(), "ok");
  kid->send("alloc 60");
  ASSERT_EQ(kid->read_line(), "ok");
  kid->send("free 60");  // 30 free pages stay mapped: max_idle is 1000
  ASSERT_EQ(kid->read_line(), "ok");
  kid->send("fill");
  ASSERT_EQ(kid->read_line(), "ok");
  kid->send("stats");
  const std::string stats = kid->read_line();
  const uint64_t in_use = std::stoull(stats.substr(stats.find("in_use=") + 7));
  const uint64_t page = std::stoull(stats.substr(stats.find("page=") + 5));
  ASSERT_TRUE(wait_until([&] { return instance(reg, "svc").mapped_bytes > in_use + 20 * page; }));

  const uint64_t limit = in_use + 2 * page;
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult r = run_command({kvpager, "limit", "svc", std::to_string(limit)}, reg.env);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto t1 = std::chrono::steady_clock::now();
  // The state is what is asserted; the time is reported (docs/DESIGN.md records it).
  ASSERT_TRUE(wait_until([&] { return instance(reg, "svc").mapped_bytes <= limit; }, 10s));
  const auto t2 = std::chrono::steady_clock::now();
  using ms = std::chrono::duration<double, std::milli>;
  std::printf("limit honoured %.1f ms after `kvpager limit` returned (the command took %.1f ms)\n",
              ms(t2 - t1).count(), ms(t1 - t0).count());
  const InstanceRecord after = instance(reg, "svc");
  EXPECT_EQ(after.limit_bytes, limit);
  EXPECT_EQ(after.revision, 1u);
  kid->send("check");  // blocks in use kept their pages and contents
  EXPECT_EQ(kid->read_line(), "ok");
  kid->send("alloc 60");  // past the limit: refused
  EXPECT_EQ(kid->read_line(), "oom");
  ASSERT_EQ(run_command({kvpager, "limit", "svc", "none"}, reg.env).status, 0);
  kid->send("alloc 60");  // raised: the next allocation may use it
  EXPECT_EQ(kid->read_line(), "ok");
  kid->send("quit");
  EXPECT_EQ(kid->wait(), 0);
}

TEST(LimitsMultiprocess, AHolderKilledInsideTheLockBlocksNobody) {
  ScopedRegistry reg("sigkill-lock");
  DeviceBudget device = make_device(reg, "1G");
  auto holder = helper(reg, {"hold-lock", "host0"});
  ASSERT_EQ(holder->read_line(), "locked") << holder->read_stderr();
  holder->kill(SIGKILL);
  holder->wait();
  // Another process registers and allocates: it must get through the lock.
  auto kid = helper(reg, {"serve", "after", "4"});
  ASSERT_EQ(kid->read_line(), "ready") << kid->read_stderr();
  kid->send("alloc 20");
  EXPECT_EQ(kid->read_line(), "ok");
  kid->send("quit");
  EXPECT_EQ(kid->wait(), 0);
  EXPECT_GE(device.snapshot_locked().recoveries, 1u);
}

TEST(LimitsMultiprocess, KilledInstanceBlocksNobodyAndGcReclaimsIt) {
  const std::string kvpager = kvpager_binary();
  ASSERT_FALSE(kvpager.empty());
  ScopedRegistry reg("sigkill-gc");
  DeviceBudget device = make_device(reg, "4M");
  auto victim = helper(reg, {"serve", "victim", "1000"});
  ASSERT_EQ(victim->read_line(), "ready");
  victim->send("alloc 90");  // 45 of the 64 pages
  ASSERT_EQ(victim->read_line(), "ok");
  victim->kill(SIGKILL);
  victim->wait();
  EXPECT_GE(device.snapshot_locked().charged_bytes, 45 * 64 * KiB);

  // The dead process's charge does not block a newcomer: the budget reclaims dead members.
  auto kid = helper(reg, {"serve", "newcomer", "4"});
  ASSERT_EQ(kid->read_line(), "ready") << kid->read_stderr();
  kid->send("alloc 90");
  EXPECT_EQ(kid->read_line(), "ok");

  const RegistrySnapshot snap = Registry(reg.config).scan();
  ASSERT_EQ(snap.instances.size(), 2u);
  EXPECT_FALSE(snap.instances[1].alive);  // "victim" sorts after "newcomer"
  const CommandResult gc = run_command({kvpager, "gc"}, reg.env);
  ASSERT_EQ(gc.status, 0) << gc.err;
  EXPECT_NE(gc.out.find("removed stale instance victim"), std::string::npos) << gc.out;
  const RegistrySnapshot after = Registry(reg.config).scan();
  ASSERT_EQ(after.instances.size(), 1u);
  EXPECT_EQ(after.instances[0].record.name, "newcomer");
  EXPECT_EQ(after.devices[0].record.members.size(), 1u);
  kid->send("quit");
  EXPECT_EQ(kid->wait(), 0);
}

TEST(LimitsMultiprocess, AStaleNameIsTakenOverAndALiveOneRefused) {
  ScopedRegistry reg("stale-name");
  auto ghost = helper(reg, {"register-and-die", "ghost"});
  ASSERT_EQ(ghost->read_line(), "registered") << ghost->read_stderr();
  EXPECT_EQ(ghost->wait(), 0);
  InstanceSpec spec{"ghost", "m", "host0", 64 * GiB, format::kUnlimited};
  auto mine = InstanceRegistration::create(reg.config, spec);  // the dead owner's name is free
  EXPECT_EQ(instance(reg, "ghost").owner.pid, ::getpid());
  EXPECT_EQ(mine->device_budget().snapshot_locked().charged_bytes, 0u);  // its 1 MiB went too
  auto rival = helper(reg, {"serve", "ghost", "4"});
  EXPECT_EQ(rival->read_line(), "");  // refused: the name is alive
  EXPECT_NE(rival->read_stderr().find("in use"), std::string::npos);
  EXPECT_EQ(rival->wait(), 1);
}

namespace {

// Runs `script` (sh, $1 = the helper) in a private mount namespace with a tmpfs of `size` at
// $D, as KVPAGER_SHM_DIR. Exit 77 when this machine does not let the test mount one.
CommandResult with_small_tmpfs(const ScopedRegistry& reg, const std::string& size,
                               const std::string& script) {
  const std::string prologue = "D=$(mktemp -d) && mount -t tmpfs -o size=" + size +
                               " kvptest \"$D\" 2>/dev/null || exit 77\n"
                               "export KVPAGER_SHM_DIR=$D\n";
  return run_command({"/usr/bin/unshare", "-m", "/bin/sh", "-c", prologue + script, "sh", kHelper},
                     reg.env);
}

}  // namespace

TEST(LimitsMultiprocess, AFullRegistryDirectoryIsAClearErrorNotABusError) {
  ScopedRegistry reg("full-tmpfs");
  // 4 KiB: not even the device segment (two pages) fits.
  CommandResult r =
      with_small_tmpfs(reg, "4k", "\"$1\" register-and-die a; echo \"a=$?\"; ls -A $D");
  if (r.status == 77) GTEST_SKIP() << "cannot mount a private tmpfs here (unshare -m, mount)";
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("a=1\n"), std::string::npos) << r.out << r.err;  // not 135: SIGBUS
  EXPECT_NE(r.err.find("is full"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("KVPAGER_SHM_DIR"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find(".tmp."), std::string::npos) << r.out;  // the temporary went too

  // 12 KiB: the device segment and one instance fit; the next instances are refused clearly
  // (and never need room for a device segment that exists already).
  r = with_small_tmpfs(reg, "12k",
                       "for n in a b c; do \"$1\" register-and-die $n; echo \"$n=$?\"; done; "
                       "ls -A $D");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("a=0\nb=1\nc=1\n"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.err.find("is full"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find(".tmp."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(reg.config.prefix + "dev-host0\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(reg.config.prefix + "inst-a\n"), std::string::npos) << r.out;
}

namespace {

// `kvpager ARGS...` with a short lock timeout, killed after 20 s if it hangs (exit 137 then).
CommandResult kvpager_bounded(const ScopedRegistry& reg, std::vector<std::string> args) {
  std::map<std::string, std::string> env = reg.env;
  env["KVPAGER_LOCK_TIMEOUT_MS"] = "300";
  args.insert(args.begin(), {"/usr/bin/timeout", "-s", "KILL", "20", kvpager_binary()});
  return run_command(args, env);
}

}  // namespace

TEST(LimitsMultiprocess, AStoppedLockHolderStallsNobodyForLongerThanTheTimeout) {
  ASSERT_FALSE(kvpager_binary().empty());
  ScopedRegistry reg("stopped-lock");
  DeviceBudget device = make_device(reg, "64M");
  std::map<std::string, std::string> env = reg.env;
  env["KVPAGER_LOCK_TIMEOUT_MS"] = "300";
  auto kid =
      std::make_unique<ChildProcess>(std::vector<std::string>{kHelper, "serve", "svc", "4"}, env);
  ASSERT_EQ(kid->read_line(), "ready") << kid->read_stderr();
  auto holder = helper(reg, {"hold-lock", "host0"});
  ASSERT_EQ(holder->read_line(), "locked") << holder->read_stderr();
  holder->kill(SIGSTOP);  // a debugger, or ^Z
  const std::string who = "held by pid " + std::to_string(holder->pid());

  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"budget", "host0", "32M"}, {"gc"}, {"gc", "--json"}}) {
    const auto t0 = std::chrono::steady_clock::now();
    const CommandResult r = kvpager_bounded(reg, cmd);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.status, 1) << cmd[0] << ": " << r.err;  // not 137: killed while hanging
    EXPECT_NE((r.err + r.out).find(who), std::string::npos) << r.err << r.out;
    EXPECT_NE((r.err + r.out).find("stopped"), std::string::npos) << r.err << r.out;
    EXPECT_LT(s, 10.0) << cmd[0];
  }
  // The instance: an alloc that needs a charge gives up (and changes nothing); once the holder
  // is gone it allocates again (the cache is not broken).
  kid->send("alloc 40");
  EXPECT_EQ(kid->read_line(), "timeout");
  holder->kill(SIGKILL);
  holder->wait();
  kid->send("alloc 40");
  EXPECT_EQ(kid->read_line(), "ok");
  const CommandResult r = kvpager_bounded(reg, {"budget", "host0", "32M"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(device.budget_bytes(), 32 * MiB);
  kid->send("quit");
  EXPECT_EQ(kid->wait(), 0);
}

TEST(LimitsMultiprocess, AGarbageLockWordMakesCommandsFailInsteadOfHanging) {
  ASSERT_FALSE(kvpager_binary().empty());
  ScopedRegistry reg("garbage-lock");
  DeviceBudget device = make_device(reg, "64M");
  // glibc's lock word (the first int of the mutex): "held by thread 0x3ffffff0", which does
  // not exist, so no robust-futex death notice will ever come.
  int bogus = 0x3ffffff0;
  std::memcpy(device.mutex(), &bogus, sizeof bogus);
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"budget", "host0", "32M"}, {"gc"}}) {
    const CommandResult r = kvpager_bounded(reg, cmd);
    EXPECT_EQ(r.status, 1) << cmd[0] << ": " << r.err;
    EXPECT_NE(r.err.find("no live process holds it"), std::string::npos) << r.err;
  }
  EXPECT_EQ(device.budget_bytes(), 64 * MiB);  // nothing changed
}

TEST(LimitsMultiprocess, ABudgetLoweredBelowTheSumInUseConvergesAsBlocksAreFreed) {
  ScopedRegistry reg("budget-lowered");
  DeviceBudget device = make_device(reg, "64M");
  std::vector<std::unique_ptr<ChildProcess>> kids;
  for (int i = 0; i < 3; ++i) {
    kids.push_back(helper(reg, {"serve", "m" + std::to_string(i), "4"}));
    ASSERT_EQ(kids.back()->read_line(), "ready") << kids.back()->read_stderr();
    kids.back()->send("alloc 400");  // 200 pages of 64 KiB: 12.5 MiB each
    ASSERT_EQ(kids.back()->read_line(), "ok");
  }
  const uint64_t budget = 4 * MiB;
  device.set_budget(budget);  // what `kvpager budget host0 4M` does
  // Let every one-shot release run (the budget change's, the idle one) before the frees.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (auto& k : kids) {
    k->send("free 368");  // down to 32 blocks, 1 MiB, each: 3 MiB in use in all
    ASSERT_EQ(k->read_line(), "ok");
  }
  // Free pages and ready handles above the budget go back within a few poll intervals.
  const auto freed = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_until([&] { return device.snapshot_locked().charged_bytes <= budget; }, 3s))
      << format_size(device.snapshot_locked().charged_bytes) << " charged";
  std::printf(
      "within the lowered budget %.1f ms after the last free returned\n",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - freed).count());
  // Within the budget now: a refusal (of its first page, or of an alloc) makes the others shed
  // their free pages, so a retry gets in.
  std::unique_ptr<ChildProcess> newcomer;
  ASSERT_TRUE(wait_until([&] {
    newcomer = helper(reg, {"serve", "new", "4"});
    return newcomer->read_line() == "ready";
  }));
  EXPECT_TRUE(wait_until([&] {
    newcomer->send("alloc 20");
    return newcomer->read_line() == "ok";
  }));
  for (auto& k : kids) {
    k->send("quit");
    EXPECT_EQ(k->wait(), 0);
  }
  newcomer->send("quit");
  EXPECT_EQ(newcomer->wait(), 0);
}

// `kvpager demo` when things go wrong (issue 20 items 9 and 10), with real processes on the
// host backend: a model instance killed mid-run is named with its signal and the others stop
// cleanly; a killed coordinator takes its workers with it; an interrupted or finished demo
// leaves no segment behind; an exported KVPAGER_SHM_PREFIX never redirects the workers.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "kvpager/limits/registry.hpp"
#include "limits/child_process.hpp"
#include "limits/registry_test_support.hpp"

using namespace kvpager;
using namespace kvpager::testing;

namespace {

std::vector<std::string> files_with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) == 0) out.push_back(name);
  }
  ::closedir(d);
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

// Waits until the three demo instances are registered and alive; returns name -> pid.
std::map<std::string, pid_t> wait_for_instances(const limits::RegistryConfig& config,
                                                std::chrono::seconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  limits::Registry registry(config);
  while (std::chrono::steady_clock::now() < end) {
    std::map<std::string, pid_t> pids;
    for (const auto& i : registry.scan().instances) {
      if (i.alive) pids[i.record.name] = static_cast<pid_t>(i.record.owner.pid);
    }
    if (pids.size() == 3) return pids;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return {};
}

template <class F>
bool eventually(F&& done, std::chrono::milliseconds within) {
  const auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

std::vector<std::string> demo_args(const ScopedRegistry& reg, const char* duration) {
  return {kvpager_binary(), "demo",       "--backend", "host",           "--duration",
          duration,         "--capacity", "512MiB",    "--budget",       "256M",
          "--peak-rate",    "4",          "--prefix",  reg.config.prefix};
}

class CliDemoFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kvpager_binary().empty()) GTEST_SKIP() << "KVPAGER_BINARY is not set";
  }
};

TEST_F(CliDemoFaults, AKilledInstanceIsNamedWithItsSignalAndTheOthersStopCleanly) {
  ScopedRegistry reg("demo-kill");
  ChildProcess demo(demo_args(reg, "30"), {}, false);
  const auto pids = wait_for_instances(reg.config, std::chrono::seconds(60));
  ASSERT_EQ(pids.size(), 3u) << join(files_with_prefix(reg.config.dir, reg.config.prefix));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pids.at("demo-b"), SIGKILL), 0);
  demo.read_all();
  const std::string err = demo.read_stderr();
  const int status = demo.wait();
  EXPECT_EQ(status, 1) << err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15))
      << "the coordinator waited for the end of the run";
  EXPECT_NE(err.find("demo-b"), std::string::npos) << err;
  EXPECT_NE(err.find("SIGKILL"), std::string::npos) << err;
  EXPECT_NE(err.find(std::to_string(pids.at("demo-b"))), std::string::npos) << err;
  EXPECT_EQ(err.find("see its error above"), std::string::npos) << err;
  for (const auto& [name, pid] : pids) EXPECT_FALSE(alive(pid)) << name << " still runs";
  EXPECT_EQ(files_with_prefix(reg.config.dir, reg.config.prefix), std::vector<std::string>{})
      << "segments left behind";
}

TEST_F(CliDemoFaults, WorkersExitAndUnregisterWhenTheCoordinatorDies) {
  ScopedRegistry reg("demo-orphan");
  ChildProcess demo(demo_args(reg, "30"), {}, false);
  const auto pids = wait_for_instances(reg.config, std::chrono::seconds(60));
  ASSERT_EQ(pids.size(), 3u);
  demo.kill(SIGKILL);
  demo.wait();
  for (const auto& [name, pid] : pids) {
    EXPECT_TRUE(eventually([pid = pid] { return !alive(pid); }, std::chrono::seconds(10)))
        << name << " outlived its coordinator";
  }
  // Each worker unregistered itself, and the last one out removed the device segment.
  EXPECT_TRUE(
      eventually([&] { return files_with_prefix(reg.config.dir, reg.config.prefix).empty(); },
                 std::chrono::seconds(5)))
      << join(files_with_prefix(reg.config.dir, reg.config.prefix));
}

TEST_F(CliDemoFaults, AnInterruptedDemoStopsEverythingAndLeavesNothing) {
  for (int sig : {SIGINT, SIGTERM}) {
    ScopedRegistry reg("demo-int");
    ChildProcess demo(demo_args(reg, "30"), {}, false);
    const auto pids = wait_for_instances(reg.config, std::chrono::seconds(60));
    ASSERT_EQ(pids.size(), 3u);
    const auto t0 = std::chrono::steady_clock::now();
    demo.kill(sig);
    demo.read_all();
    const std::string err = demo.read_stderr();
    const int status = demo.wait();
    EXPECT_EQ(status, 128 + sig) << err;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
    for (const auto& [name, pid] : pids) EXPECT_FALSE(alive(pid)) << name << " still runs";
    EXPECT_EQ(files_with_prefix(reg.config.dir, reg.config.prefix), std::vector<std::string>{});
  }
}

TEST_F(CliDemoFaults, AFinishedDemoLeavesNoSegmentAndKeepsToItsPrefix) {
  ScopedRegistry reg("demo-own");
  ScopedRegistry other("demo-other");  // exported: the workers must not follow it
  ChildProcess demo(demo_args(reg, "2"), {{"KVPAGER_SHM_PREFIX", other.config.prefix}}, false);
  std::atomic<bool> done{false};
  int status = -1;
  std::string out, err;
  std::thread waiter([&] {
    out = demo.read_all();
    err = demo.read_stderr();
    status = demo.wait();
    done = true;
  });
  bool touched_other = false;
  std::string seen;
  while (!done) {
    const auto f = files_with_prefix(other.config.dir, other.config.prefix);
    if (!f.empty()) {
      touched_other = true;
      seen = join(f);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  waiter.join();
  EXPECT_EQ(status, 0) << out << err;
  EXPECT_FALSE(touched_other) << "the demo registered under the exported prefix: " << seen;
  EXPECT_EQ(files_with_prefix(reg.config.dir, reg.config.prefix), std::vector<std::string>{});
  EXPECT_EQ(files_with_prefix(other.config.dir, other.config.prefix), std::vector<std::string>{});
}

}  // namespace

// The tp layer with real worker processes (`kvpager tp-worker`) on the host backend, for every
// broadcast strategy: map/unmap state on every rank, bad page ids, rollback after a failure
// injected into one rank, a worker killed mid-broadcast, a hung worker, a worker that never
// starts, a scheduler that crashes, and nothing left behind. Timeouts only bound a hung test.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "kvpager/common/error.hpp"
#include "kvpager/tp/protocol.hpp"
#include "kvpager/tp/tp_scheduler.hpp"
#include "support/wait_until.hpp"
#include "tp/tp_test_support.hpp"

namespace kvpager::tp {
namespace {

using testing::process_gone;
using testing::small_tp_config;

std::vector<PageId> ids(std::initializer_list<uint32_t> values) {
  std::vector<PageId> out;
  for (uint32_t v : values) out.push_back(PageId(v));
  return out;
}

// Every rank reports exactly `mapped` (ascending) as its mapped pages.
void expect_mapped_everywhere(TpScheduler& s, std::vector<uint32_t> mapped) {
  const uint64_t want = page_state_checksum(mapped);
  for (const RankState& r : s.query()) {
    EXPECT_TRUE(r.kv_tensors_created) << "rank " << r.rank.value;
    EXPECT_EQ(r.mapped_pages, mapped.size()) << "rank " << r.rank.value;
    EXPECT_EQ(r.state_checksum, want) << "rank " << r.rank.value;
  }
}

std::vector<pid_t> pids_of(const TpScheduler& s) {
  std::vector<pid_t> out;
  for (int r = 0; r < s.tp_size(); ++r) out.push_back(s.worker_pid(RankId(r)));
  return out;
}

void expect_all_gone(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) EXPECT_TRUE(process_gone(p)) << "worker pid " << p << " still exists";
}

class TpBroadcast : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (std::getenv("KVPAGER_BINARY") == nullptr) GTEST_SKIP() << "KVPAGER_BINARY is not set";
  }
  TpConfig config(int tp_size = 3) { return small_tp_config(GetParam(), tp_size); }
};

TEST_P(TpBroadcast, MapAndUnmapReachEveryRank) {
  TpScheduler s(config());
  EXPECT_EQ(s.num_pages(), 64u);
  expect_mapped_everywhere(s, {});
  s.map(ids({1, 5, 7}));
  expect_mapped_everywhere(s, {1, 5, 7});
  s.unmap(ids({5}));
  expect_mapped_everywhere(s, {1, 7});
  s.ping();
  s.map(ids({63}));
  s.unmap(ids({1, 7, 63}));
  expect_mapped_everywhere(s, {});
  for (const Reply& r : s.last_replies()) EXPECT_LE(r.start_ns, r.end_ns);
}

TEST_P(TpBroadcast, SingleRankWithSpinningWaits) {
  TpScheduler s(config(1));  // one rank: spinning stays on even on a two-CPU machine
  for (uint32_t p = 0; p < 20; ++p) {
    s.map(ids({p}));
    s.ping();
  }
  std::vector<uint32_t> all;
  for (uint32_t p = 0; p < 20; ++p) all.push_back(p);
  expect_mapped_everywhere(s, all);
}

TEST_P(TpBroadcast, PerLayerLayoutMapsEveryHandle) {
  TpConfig c = config(2);
  c.worker.layout = kv::KvLayout::kPerLayer;
  TpScheduler s(c);
  EXPECT_EQ(s.handles_per_page(), 8u);  // 4 layers x K/V
  s.map(ids({0, 2}));
  expect_mapped_everywhere(s, {0, 2});
  s.unmap(ids({0, 2}));
  expect_mapped_everywhere(s, {});
}

TEST_P(TpBroadcast, PageBeyondTheRangeIsRejectedBeforeAnyRankMaps) {
  TpScheduler s(config());
  try {
    s.map(ids({3, s.num_pages()}));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("beyond the virtual range"), std::string::npos)
        << e.what();
  }
  expect_mapped_everywhere(s, {});
  // A page in the wrong state fails on every rank, and each rank undoes its own part.
  s.map(ids({2, 3}));
  EXPECT_THROW(s.map(ids({4, 3})), InvalidArgument);
  EXPECT_THROW(s.unmap(ids({9})), InvalidArgument);
  expect_mapped_everywhere(s, {2, 3});
  s.ping();  // still usable
}

TEST_P(TpBroadcast, MapFailingOnOneRankIsRolledBackOnTheOthers) {
  TpConfig c = config();
  c.fault = FaultSpec{1, vmm::BackendOp::kMap, 2};  // rank 1: the second page's map fails
  TpScheduler s(c);
  try {
    s.map(ids({5, 6}));
    FAIL() << "expected DriverError";
  } catch (const DriverError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 1"), std::string::npos) << what;
    EXPECT_NE(what.find("rolled back on rank(s) 0,2"), std::string::npos) << what;
  }
  expect_mapped_everywhere(s, {});
  s.map(ids({5, 6}));  // the fault fired once
  expect_mapped_everywhere(s, {5, 6});
}

TEST_P(TpBroadcast, UnmapFailingOnOneRankIsRolledBackOnTheOthers) {
  TpConfig c = config();
  c.fault = FaultSpec{2, vmm::BackendOp::kUnmap, 1};
  TpScheduler s(c);
  s.map(ids({1}));
  EXPECT_THROW(s.unmap(ids({1})), DriverError);
  expect_mapped_everywhere(s, {1});
  s.unmap(ids({1}));
  expect_mapped_everywhere(s, {});
}

TEST_P(TpBroadcast, WorkerKilledMidBroadcastFailsNamingTheRank) {
  auto s = std::make_unique<TpScheduler>(config());
  const auto pids = pids_of(*s);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ::kill(pids[1], SIGKILL);
  });
  std::string what;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (what.empty() && std::chrono::steady_clock::now() < end) {
    try {
      s->map(ids({4}));
      s->unmap(ids({4}));
    } catch (const StateError& e) {
      what = e.what();
    }
  }
  killer.join();
  ASSERT_FALSE(what.empty()) << "no broadcast failed after a worker was killed";
  EXPECT_NE(what.find("rank 1"), std::string::npos) << what;
  EXPECT_NE(what.find("SIGKILL"), std::string::npos) << what;
  try {
    s->ping();
    FAIL() << "a broken scheduler must refuse";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
  s.reset();
  expect_all_gone(pids);
}

TEST_P(TpBroadcast, HungWorkerTimesOutNamingTheRank) {
  TpConfig c = config();
  c.timeout = std::chrono::milliseconds(300);
  auto s = std::make_unique<TpScheduler>(c);
  const auto pids = pids_of(*s);
  ASSERT_EQ(::kill(pids[2], SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    s->map(ids({8}));
    FAIL() << "expected Timeout";
  } catch (const Timeout& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 2"), std::string::npos) << what;
    EXPECT_NE(what.find("did not answer"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  s.reset();
  expect_all_gone(pids);
}

// Issue 20 item 12: with seq, a hung rank 0 used to leave the ranks after it "did not answer
// within 0 ms" and they were killed as hung. Only the rank that missed its deadline is blamed.
TEST_P(TpBroadcast, OnlyTheHungRankIsBlamedForATimeout) {
  TpConfig c = config();
  c.timeout = std::chrono::milliseconds(300);
  auto s = std::make_unique<TpScheduler>(c);
  const auto pids = pids_of(*s);
  ASSERT_EQ(::kill(pids[0], SIGSTOP), 0);
  try {
    s->map(ids({3}));
    FAIL() << "expected Timeout";
  } catch (const Timeout& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0 (pid " + std::to_string(pids[0]) + ") did not answer"),
              std::string::npos)
        << what;
    EXPECT_EQ(what.find("rank 1 ("), std::string::npos) << what;
    EXPECT_EQ(what.find("rank 2 ("), std::string::npos) << what;
    EXPECT_EQ(what.find("within 0 ms"), std::string::npos) << what;
  }
  EXPECT_FALSE(process_gone(pids[1])) << "healthy rank 1 was killed as hung";
  EXPECT_FALSE(process_gone(pids[2])) << "healthy rank 2 was killed as hung";
  s.reset();
  expect_all_gone(pids);
}

TEST_P(TpBroadcast, WorkerThatNeverStartsFailsTheConstructor) {
  TpConfig c = config(2);
  c.worker_binary = "/nonexistent/kvpager";
  try {
    TpScheduler s(c);
    FAIL() << "expected the start to fail";
  } catch (const StateError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0"), std::string::npos) << what;
    EXPECT_NE(what.find("could not execute"), std::string::npos) << what;
  }
  // A worker that starts but cannot build its KV tensors reports why.
  c = config(2);
  c.worker.backend.host_capacity_bytes = 1 * MiB;
  c.worker.ready_pages = 32;  // 2 MiB of handles
  EXPECT_THROW(TpScheduler{c}, OutOfMemory);
  c = config(2);
  c.worker.ready_pages = 100000;  // more than the 64 virtual pages
  EXPECT_THROW(TpScheduler{c}, InvalidArgument);
}

TEST_P(TpBroadcast, NothingIsLeftBehind) {
  // Other suites create kvpager-* segments concurrently: look only at names tp could use.
  const auto shm_before = testing::dir_entries("/dev/shm", "kvpager-tp");
  const auto tmp_before = testing::dir_entries("/tmp", "kvpager-tp");
  const size_t fds_before = testing::open_fd_count();
  std::vector<pid_t> pids;
  {
    TpScheduler s(config());
    pids = pids_of(s);
    s.map(ids({1}));
    s.unmap(ids({1}));
  }
  expect_all_gone(pids);
  EXPECT_EQ(testing::open_fd_count(), fds_before);
  EXPECT_EQ(testing::dir_entries("/dev/shm", "kvpager-tp"), shm_before);
  EXPECT_EQ(testing::dir_entries("/tmp", "kvpager-tp"), tmp_before);
  int status = 0;
  EXPECT_EQ(::waitpid(-1, &status, WNOHANG), -1) << "a child is left to reap";
}

TEST_P(TpBroadcast, WorkersDieWithACrashedScheduler) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t scheduler = ::fork();
  ASSERT_GE(scheduler, 0);
  if (scheduler == 0) {
    ::close(pipe_fds[0]);
    try {
      TpScheduler s(config(2));
      const auto pids = pids_of(s);
      (void)!::write(pipe_fds[1], pids.data(), pids.size() * sizeof(pid_t));
      ::pause();  // until SIGKILLed
    } catch (...) {
    }
    ::_exit(1);
  }
  ::close(pipe_fds[1]);
  std::vector<pid_t> pids(2);
  const ssize_t n = ::read(pipe_fds[0], pids.data(), pids.size() * sizeof(pid_t));
  ::close(pipe_fds[0]);
  ::kill(scheduler, SIGKILL);
  ::waitpid(scheduler, nullptr, 0);
  ASSERT_EQ(n, static_cast<ssize_t>(pids.size() * sizeof(pid_t)));
  for (pid_t p : pids) {
    EXPECT_TRUE(testing::wait_until([&] { return process_gone(p); }))
        << "worker " << p << " outlived its scheduler";
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, TpBroadcast,
                         ::testing::Values("seq", "thread", "async", "shm"),
                         [](const auto& info) { return info.param; });

TEST(TpStrategies, UnknownNameListsTheKnownOnes) {
  try {
    find_strategy("carrier-pigeon");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("seq, thread, async, shm"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvpager::tp

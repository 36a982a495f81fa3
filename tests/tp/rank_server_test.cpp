// Rank servers (the tp rank inside an engine's own worker process) and the scheduler-side
// KvCache that drives them over named channels, on the host backend: connect and hello,
// map/unmap through KvCache on 2 and 4 ranks with the data of each rank kept apart, the budget
// charge, a lowered limit on every rank, a rank out of memory and a rank killed mid-run (typed
// error, the others rolled back), another uid and an unknown token refused, the warm-up
// window, and a scheduler that goes away (the server unmaps and ends).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/tp/rank_server.hpp"
#include "kvpager/tp/socket_link.hpp"
#include "kvpager/tp/tp_page_store.hpp"
#include "kvpager/tp/unix_channel.hpp"
#include "support/wait_until.hpp"
#include "tp/tp_test_support.hpp"

namespace kvpager::tp {
namespace {

using testing::kTpGranularity;
using testing::wait_until;

std::string fresh_token() {
  static std::atomic<int> n{0};
  return "test-" + std::to_string(getpid()) + "-" + std::to_string(n++);
}

// The small geometry of the tp tests: a 32 KiB interleaved cell, two blocks per 64 KiB page.
RankServerConfig rank_config(const std::string& token, uint32_t rank, uint64_t capacity = 0) {
  RankServerConfig c;
  c.worker = testing::small_tp_config("async", 1).worker;
  c.worker.num_blocks = 128;  // 64 pages
  c.worker.ready_pages = 0;
  if (capacity != 0) c.worker.backend.host_capacity_bytes = capacity;
  c.token = token;
  c.rank = RankId(rank);
  return c;
}

kv::KvCacheConfig cache_config(const RankServerConfig& rank) {
  kv::KvCacheConfig c;
  c.geometry = rank.worker.geometry;
  c.layout = rank.worker.layout;
  c.num_blocks = rank.worker.num_blocks;
  c.reserve_pages = 0;
  c.max_idle_pages = 0;
  c.idle_release_ms = 0;
  return c;
}

TpStoreConfig store_config(const std::string& token, int tp_size) {
  TpStoreConfig c;
  c.token = token;
  c.tp.tp_size = tp_size;
  c.tp.timeout = std::chrono::seconds(5);
  c.tp.start_timeout = std::chrono::seconds(5);
  return c;
}

std::vector<std::unique_ptr<RankServer>> start_ranks(const std::string& token, int n) {
  std::vector<std::unique_ptr<RankServer>> out;
  for (int r = 0; r < n; ++r) out.push_back(std::make_unique<RankServer>(rank_config(token, r)));
  return out;
}

// Element 0 of block `b` in layer 0's K tensor of `server`'s space.
uint16_t* element(const RankServer& server, BlockId b) {
  const kv::TensorView v = server.space().tensor(0, 0);
  return reinterpret_cast<uint16_t*>(v.base +
                                     static_cast<uint64_t>(b.value) * v.block_stride_bytes);
}

class RankServers : public ::testing::TestWithParam<int> {};

TEST_P(RankServers, KvCacheMapsEveryRankAndKeepsTheirDataApart) {
  const int tp = GetParam();
  const std::string token = fresh_token();
  auto ranks = start_ranks(token, tp);
  auto budget = std::make_shared<limits::LocalBudget>();
  const kv::KvCacheConfig config = cache_config(ranks[0]->config());
  auto cache =
      std::make_unique<kv::KvCache>(TpPageStore::factory(store_config(token, tp)), config, budget);
  const uint64_t rank_page = 64 * 1024;
  const kv::KvCacheStats s0 = cache->stats();
  EXPECT_EQ(s0.num_pages, 64u);
  EXPECT_EQ(s0.page_bytes, rank_page * tp);            // all ranks on the host: each one charged
  EXPECT_EQ(budget->charged_bytes(), rank_page * tp);  // the null block's page
  for (const auto& r : ranks) {
    EXPECT_EQ(r->phase(), RankServer::Phase::kServing);
    EXPECT_EQ(r->mapped_pages(), 1u);
  }
  EXPECT_THROW(cache->tensor(0, 0), StateError);  // no KV memory in the scheduler's process

  const std::vector<BlockId> blocks = cache->alloc(9);  // block 1, then 4 more pages
  EXPECT_EQ(budget->charged_bytes(), 5 * rank_page * tp);
  for (int r = 0; r < tp; ++r) {
    EXPECT_EQ(ranks[r]->mapped_pages(), 5u);
    for (const BlockId b : blocks)
      *element(*ranks[r], b) = static_cast<uint16_t>(r * 1000 + b.value);
  }
  for (int r = 0; r < tp; ++r) {
    for (const BlockId b : blocks) {
      EXPECT_EQ(*element(*ranks[r], b), r * 1000 + b.value) << "rank " << r << " block " << b.value;
    }
  }
  cache->free(blocks);
  cache->trim();
  for (const auto& r : ranks) EXPECT_EQ(r->mapped_pages(), 1u);  // the null block's page
  EXPECT_EQ(budget->charged_bytes(), rank_page * tp);

  // A limit of 3 pages (of every rank) holds on every rank.
  cache->resize(3 * rank_page * tp);
  EXPECT_THROW(cache->alloc(8), OutOfMemory);
  const std::vector<BlockId> fit = cache->alloc(4);
  for (const auto& r : ranks) EXPECT_EQ(r->mapped_pages(), 3u);
  cache->free(fit);

  cache.reset();  // the sessions end: every rank unmaps and its server finishes
  EXPECT_EQ(budget->charged_bytes(), 0u);
  for (const auto& r : ranks) {
    EXPECT_TRUE(wait_until([&] { return r->phase() == RankServer::Phase::kFinished; }));
    EXPECT_EQ(r->mapped_pages(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(TpSizes, RankServers, ::testing::Values(2, 4));

TEST(RankServer, RankOutOfMemoryRollsTheOthersBack) {
  const std::string token = fresh_token();
  RankServer r0(rank_config(token, 0));
  RankServer r1(rank_config(token, 1, 3 * 64 * 1024));  // room for 3 pages only
  kv::KvCache cache(TpPageStore::factory(store_config(token, 2)), cache_config(r0.config()));
  const auto ok = cache.alloc(4);  // pages 0..2 on both
  try {
    cache.alloc(2);
    FAIL() << "rank 1 has no room for a fourth page";
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rolled back on rank(s) 0"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(r0.mapped_pages(), 3u);
  EXPECT_EQ(r1.mapped_pages(), 3u);
  cache.free(ok);  // still usable after an out-of-memory
  EXPECT_EQ(cache.alloc(4).size(), 4u);
}

TEST(RankServer, DriverFailureOnOneRankIsTypedAndRolledBackOnTheOthers) {
  const std::string token = fresh_token();
  RankServer r0(rank_config(token, 0));
  RankServerConfig faulty = rank_config(token, 1);
  faulty.fault = parse_fault("map:3", 1);  // the third map call of rank 1 fails
  RankServer r1(faulty);
  RankServer r2(rank_config(token, 2));
  kv::KvCache cache(TpPageStore::factory(store_config(token, 3)), cache_config(r0.config()));
  const auto held = cache.alloc(3);  // rank 1's maps 1 and 2: pages 0 and 1
  try {
    cache.alloc(2);  // page 2: rank 1's third map
    FAIL() << "rank 1's map was armed to fail";
  } catch (const DriverError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rolled back on rank(s) 0,2"), std::string::npos)
        << e.what();
  }
  for (const RankServer* r : {&r0, &r1, &r2}) EXPECT_EQ(r->mapped_pages(), 2u);
  EXPECT_EQ(cache.alloc(2).size(), 2u);  // a driver error does not break the scheduler
  for (const RankServer* r : {&r0, &r1, &r2}) EXPECT_EQ(r->mapped_pages(), 3u);
  cache.free(held);
}

// Rank 1 in a child process that waits to be killed.
pid_t start_rank_in_child(const std::string& token, uint32_t rank) {
  int ready[2];
  EXPECT_EQ(pipe(ready), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    {
      RankServer server(rank_config(token, rank));
      const char c = 'r';
      if (write(ready[1], &c, 1) != 1) _exit(3);
      pause();
    }
    _exit(0);
  }
  close(ready[1]);
  char c = 0;
  EXPECT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  return pid;
}

TEST(RankServer, RankKilledMidRunIsAStateErrorAndTheOthersRollBack) {
  const std::string token = fresh_token();
  const pid_t child = start_rank_in_child(token, 1);  // before this process has threads
  RankServer r0(rank_config(token, 0));
  RankServer r2(rank_config(token, 2));
  kv::KvCache cache(TpPageStore::factory(store_config(token, 3)), cache_config(r0.config()));
  const auto held = cache.alloc(2);
  EXPECT_EQ(r0.mapped_pages(), 2u);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  try {
    cache.alloc(4);
    FAIL() << "rank 1 is dead";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rolled back on rank(s) 0,2"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(r0.mapped_pages(), 2u);  // what the failed alloc mapped is gone again
  EXPECT_EQ(r2.mapped_pages(), 2u);
  EXPECT_THROW(cache.alloc(4), StateError);  // the scheduler is broken for good
}

TEST(RankServer, AnotherUidIsRefusedBeforeAnyMessage) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  const std::string token = fresh_token();
  RankServer server(rank_config(token, 0));
  const pid_t pid = fork();
  if (pid == 0) {
    if (setuid(65534) != 0) _exit(3);
    const int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string name = server.channel();
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr),
                static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0) {
      _exit(4);
    }
    Reply hello;
    _exit(recv(fd, &hello, sizeof hello, 0) == 0 ? 0 : 1);  // EOF: refused, no hello
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "another uid got a hello";
  EXPECT_EQ(server.refused_peers(), 1u);
  EXPECT_EQ(server.phase(), RankServer::Phase::kListening);  // still waiting for its scheduler
  kv::KvCache cache(TpPageStore::factory(store_config(token, 1)), cache_config(server.config()));
  EXPECT_EQ(server.phase(), RankServer::Phase::kServing);
}

TEST(RankServer, UnknownTokenTimesOutNamingTheChannel) {
  const std::string token = fresh_token();
  RankServer server(rank_config(token, 0));
  TpStoreConfig config = store_config(fresh_token(), 1);
  config.tp.start_timeout = std::chrono::milliseconds(100);
  try {
    kv::KvCache cache(TpPageStore::factory(config), cache_config(server.config()));
    FAIL() << "nobody listens on that token";
  } catch (const Timeout& e) {
    EXPECT_NE(std::string(e.what()).find("kvpager-tp/"), std::string::npos) << e.what();
  }
  EXPECT_EQ(server.phase(), RankServer::Phase::kListening);
  EXPECT_THROW(RankServer(rank_config(token, 0)), InvalidArgument);  // the channel is taken
  EXPECT_THROW(rank_channel_name("a/b", RankId(0)), InvalidArgument);
}

TEST(RankServer, WarmUpPagesMustBeGivenBackBeforeTheSchedulerConnects) {
  const std::string token = fresh_token();
  RankServer server(rank_config(token, 0));
  const std::vector<PageId> window = {PageId(0), PageId(1), PageId(2)};
  server.map_local(window);
  EXPECT_EQ(server.mapped_pages(), 3u);
  try {
    kv::KvCache cache(TpPageStore::factory(store_config(token, 1)), cache_config(server.config()));
    FAIL() << "the warm-up window is still mapped";
  } catch (const StateError& e) {
    EXPECT_NE(std::string(e.what()).find("warm-up"), std::string::npos) << e.what();
  }
  server.unmap_local(window);
  kv::KvCache cache(TpPageStore::factory(store_config(token, 1)), cache_config(server.config()));
  EXPECT_THROW(server.map_local(window), StateError);
  EXPECT_EQ(server.mapped_pages(), 1u);
}

TEST(RankServer, GeometryMismatchIsRefusedNamingTheRank) {
  const std::string token = fresh_token();
  RankServer server(rank_config(token, 0));
  kv::KvCacheConfig config = cache_config(server.config());
  config.geometry.kv_heads = 4;  // the scheduler thinks of the unsharded model
  try {
    kv::KvCache cache(TpPageStore::factory(store_config(token, 1)), config);
    FAIL() << "geometries differ";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tp rank 0"), std::string::npos) << e.what();
  }
}

TEST(RankServer, SchedulerGoneEndsTheLoopAndUnmaps) {
  const std::string token = fresh_token();
  RankServer server(rank_config(token, 0));
  const pid_t pid = fork();
  if (pid == 0) {
    TpConfig tp = store_config(token, 1).tp;
    std::vector<std::unique_ptr<RankLink>> links;
    links.push_back(std::make_unique<SocketLink>(
        RankId(0), connect_channel(server.channel(), Clock::now() + std::chrono::seconds(5))));
    TpScheduler s(tp, std::move(links));
    const std::vector<PageId> pages = {PageId(4), PageId(5)};
    s.map(pages);
    _exit(0);  // no shutdown: the server sees end of file
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(wait_until([&] { return server.phase() == RankServer::Phase::kFinished; }));
  EXPECT_EQ(server.mapped_pages(), 0u);
  EXPECT_EQ(server.error(), "");
}

TEST(RankServer, DestructorEndsASessionTheSchedulerSeesAsDied) {
  const std::string token = fresh_token();
  auto server = std::make_unique<RankServer>(rank_config(token, 0));
  kv::KvCache cache(TpPageStore::factory(store_config(token, 1)), cache_config(server->config()));
  server.reset();
  EXPECT_THROW(cache.alloc(4), StateError);
}

}  // namespace
}  // namespace kvpager::tp

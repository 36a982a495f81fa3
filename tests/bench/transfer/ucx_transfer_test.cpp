// UCX transfers between real processes on loopback, meeting through an etcd this test starts;
// --check_consistency verifies every byte of every row. Also the etcd client itself.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "bench/transfer/etcd_server.hpp"
#include "cli/kvbench_run.hpp"
#include "kvpager/bench/transfer/etcd_client.hpp"
#include "kvpager/common/error.hpp"

using kvpager::testing::lines_of;
using kvpager::testing::run_kvpager;
using kvpager::testing::RunResult;

namespace {

class UcxTransfer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { etcd_ = new kvpager::testing::EtcdServer(); }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  static kvpager::testing::EtcdServer* etcd_;

  std::vector<std::string> xfer(std::vector<std::string> extra) {
    std::vector<std::string> args = {"bench",
                                     "xfer",
                                     "--backend",
                                     "UCX",
                                     "--etcd-endpoints",
                                     etcd_->url(),
                                     "--start_block_size",
                                     "4K",
                                     "--max_block_size",
                                     "64K",
                                     "--start_batch_size",
                                     "2",
                                     "--max_batch_size",
                                     "8",
                                     "--num_iter",
                                     "4",
                                     "--warmup_iter",
                                     "1",
                                     "--check_consistency",
                                     "--peer_timeout",
                                     "60"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  // Data rows of nixlbench's table.
  static size_t rows(const std::string& out) {
    size_t n = 0;
    bool body = false;
    for (const auto& l : lines_of(out)) {
      if (l.rfind("-----", 0) == 0)
        body = true;
      else if (body && !l.empty() && std::isdigit(static_cast<unsigned char>(l[0])))
        ++n;
    }
    return n;
  }
};
kvpager::testing::EtcdServer* UcxTransfer::etcd_ = nullptr;

}  // namespace

TEST_F(UcxTransfer, EtcdClientBasics) {
  kvpager::transfer::EtcdClient etcd(etcd_->url());
  etcd.put("/kvpager/test/a", std::string("x\0y", 3));
  EXPECT_EQ(etcd.get("/kvpager/test/a"), std::string("x\0y", 3));
  EXPECT_FALSE(etcd.get("/kvpager/test/none").has_value());
  EXPECT_TRUE(etcd.create("/kvpager/test/c", "1"));
  EXPECT_FALSE(etcd.create("/kvpager/test/c", "2"));
  EXPECT_EQ(etcd.get_prefix("/kvpager/test/").size(), 3u);  // a, c and the ready probe
  etcd.erase_prefix("/kvpager/test/");
  EXPECT_TRUE(etcd.get_prefix("/kvpager/test/").empty());
  EXPECT_THROW(etcd.wait_for("/kvpager/test/never", std::chrono::milliseconds(50), "nothing"),
               kvpager::Timeout);
  kvpager::transfer::EtcdClient dead("http://127.0.0.1:1");
  try {
    dead.put("k", "v");
    FAIL();
  } catch (const kvpager::Error& e) {
    EXPECT_NE(std::string(e.what()).find("etcd http://127.0.0.1:1 unreachable"), std::string::npos);
  }
}

TEST_F(UcxTransfer, EverySchemeAndOpMovesEveryByte) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"--num_threads", "2"},
      {"--scheme", "manytoone", "--num_initiator_dev", "2"},
      {"--scheme", "onetomany", "--num_target_dev", "2"},
      {"--scheme", "tp", "--num_target_dev", "2"},
  };
  int group = 0;
  for (const char* op : {"WRITE", "READ"}) {
    for (auto extra : cases) {
      extra.insert(extra.end(),
                   {"--op_type", op, "--spawn_local", "--benchmark_group",
                    "schemes-" + std::to_string(::getpid()) + "-" + std::to_string(group++)});
      const RunResult r = run_kvpager(xfer(extra));
      std::string label = op;
      for (const auto& e : extra) label += " " + e;
      EXPECT_EQ(r.rc, 0) << label << "\n" << r.err;
      EXPECT_EQ(rows(r.out), 5u * 3u) << label << "\n" << r.out;  // 4K..64K x 2, 4, 8
    }
  }
}

TEST_F(UcxTransfer, RanksStartedSeparatelyMeetThroughEtcd) {
  const std::string group = "separate-" + std::to_string(::getpid());
  RunResult target;
  std::thread t([&] { target = run_kvpager(xfer({"--benchmark_group", group, "--rank", "1"})); });
  const RunResult initiator = run_kvpager(xfer({"--benchmark_group", group, "--rank", "0"}));
  t.join();
  EXPECT_EQ(initiator.rc, 0) << initiator.err;
  EXPECT_EQ(target.rc, 0) << target.err;
  EXPECT_EQ(rows(initiator.out), 15u);
  EXPECT_EQ(target.out, "");  // only rank 0 prints
  // Rank 0 removed the group's keys.
  kvpager::transfer::EtcdClient etcd(etcd_->url());
  EXPECT_TRUE(etcd.get_prefix("/kvpager/xfer/" + group + "/").empty());
}

TEST_F(UcxTransfer, JsonReportAndFailures) {
  const auto json = std::filesystem::temp_directory_path() /
                    ("kvpager_xfer_" + std::to_string(::getpid()) + ".json");
  RunResult r = run_kvpager(xfer({"--spawn_local", "--json", json.string()}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ifstream in(json);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("rows").size(), 15u);
  EXPECT_EQ(j.at("rows")[0].at("mismatched_bytes"), 0);
  std::filesystem::remove(json);

  // Unreachable etcd: runtime error, one line, exit 1, no output file.
  std::vector<std::string> args = xfer({"--spawn_local", "--json", json.string()});
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--etcd-endpoints") args[i + 1] = "http://127.0.0.1:1";
  }
  r = run_kvpager(args);
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
  EXPECT_NE(r.err.find("etcd http://127.0.0.1:1 unreachable"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(json));

  // A rank that is already taken (a stale run) is reported, not waited for.
  const std::string group = "stale-" + std::to_string(::getpid());
  kvpager::transfer::EtcdClient etcd(etcd_->url());
  etcd.put("/kvpager/xfer/" + group + "/rank/0", "pid 1");
  r = run_kvpager(xfer({"--benchmark_group", group, "--rank", "0"}));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("is already taken"), std::string::npos) << r.err;

  // Bad flags are usage errors.
  r = run_kvpager(xfer({"--scheme", "ring"}));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--scheme ring"), std::string::npos) << r.err;
  r = run_kvpager(xfer({"--initiator_seg_type", "VRAM", "--spawn_local"}));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("DRAM"), std::string::npos) << r.err;
}

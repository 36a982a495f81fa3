// kvpager kvbench profile: runs the plan with kvpager's own UCX benchmark when nixlbench is not
// on PATH, and hands nixlbench the planned flags when it is.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "bench/transfer/etcd_server.hpp"
#include "cli/kvbench_run.hpp"

using kvpager::testing::lines_of;
using kvpager::testing::run_kvpager;

namespace fs = std::filesystem;

namespace {

std::string examples() {
  return kvpager::testing::source_dir_path() + "/models/examples";
}

}  // namespace

TEST(KvbenchProfile, RunsThePlanWithBenchXferWithoutNixlbench) {
  kvpager::testing::EtcdServer etcd;
  const auto r =
      run_kvpager({"kvbench", "profile", "--model", "deepseek-r1", "--model_config",
                   examples() + "/layer-tp1-pp16.yaml", "--num_requests", "1", "--backend", "UCX",
                   "--etcd-endpoints", etcd.url(), "--num_iter", "2", "--warmup_iter", "1",
                   "--total_buffer_size", "16M", "--check_consistency"},
                  "", {"PATH=/usr/bin:/bin"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Model Config: " + examples() + "/layer-tp1-pp16.yaml\n"),
            std::string::npos);
  EXPECT_NE(r.out.find("nixlbench not on PATH: running kvpager bench xfer\n"), std::string::npos);
  // One row: the plan's block (147456) and batch (ceil(61*576*10000/147456) = 2383).
  bool found = false;
  for (const auto& l : lines_of(r.out)) {
    if (l.rfind("147456", 0) == 0) {
      EXPECT_EQ(l.substr(20, 4), "2383") << l;
      found = true;
    }
  }
  EXPECT_TRUE(found) << r.out;
}

TEST(KvbenchProfile, HandsNixlbenchThePlannedFlags) {
  const fs::path dir =
      fs::temp_directory_path() / ("kvpager_fake_nixl_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path log = dir / "args.txt";
  {
    std::ofstream script(dir / "nixlbench");
    script << "#!/bin/sh\necho \"$@\" > " << log.string() << "\n";
  }
  ::chmod((dir / "nixlbench").c_str(), 0755);
  const auto r =
      run_kvpager({"kvbench", "profile", "--model", "deepseek-r1", "--model_config",
                   examples() + "/block-tp1-pp16.yaml", "--backend", "GDS", "--source", "gpu"},
                  "", {"PATH=" + dir.string() + ":/usr/bin:/bin"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ifstream in(log);
  std::string args;
  std::getline(in, args);
  // the buffer sized to the plan, as `plan` prints it: 5958 x 589824
  EXPECT_EQ(args,
            "--backend GDS --max_batch_size 5958 --max_block_size 589824 --start_batch_size 5958 "
            "--start_block_size 589824 --target_seg_type VRAM --total_buffer_size 3514171392");
  // A plan beyond the 8 GiB default (119141 x 294912 B = 35 GB) gets a buffer that holds it,
  // and a user's size nixlbench would refuse is an error before nixlbench starts.
  const std::vector<std::string> big = {"kvbench",        "profile",
                                        "--model",        "deepseek-r1",
                                        "--model_config", examples() + "/block-tp1-pp8.yaml",
                                        "--pp",           "32",
                                        "--num_requests", "100",
                                        "--backend",      "GDS",
                                        "--source",       "gpu"};
  const std::vector<std::string> env = {"PATH=" + dir.string() + ":/usr/bin:/bin"};
  const auto sized = run_kvpager(big, "", env);
  ASSERT_EQ(sized.rc, 0) << sized.err;
  std::ifstream in2(log);
  std::getline(in2, args);
  EXPECT_NE(args.find("--max_batch_size 119141 "), std::string::npos) << args;
  EXPECT_NE(args.find("--total_buffer_size 35136110592"), std::string::npos) << args;
  std::vector<std::string> refused = big;
  refused.insert(refused.end(), {"--total_buffer_size", "8G"});
  fs::remove(log);
  const auto r8 = run_kvpager(refused, "", env);
  EXPECT_EQ(r8.rc, 2) << r8.out;
  EXPECT_NE(r8.err.find("give 35136110592 or more"), std::string::npos) << r8.err;
  EXPECT_FALSE(fs::exists(log)) << "nixlbench ran with a buffer it refuses";
  fs::remove_all(dir);
}

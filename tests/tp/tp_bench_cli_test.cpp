// `kvpager bench tp-ipc` and `kvpager bench map-parallel` on the host backend: every
// strategy runs and reports the documented JSON keys; bad input gives exit status 2.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace {

struct CliRun {
  int status = -1;
  std::string out;
};

CliRun kvpager(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(std::getenv("KVPAGER_BINARY")) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class TpBenchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("KVPAGER_BINARY") == nullptr) GTEST_SKIP() << "KVPAGER_BINARY is not set";
  }
};

TEST_F(TpBenchCli, TpIpcRunsEveryStrategy) {
  for (const char* impl : {"seq", "thread", "async", "shm"}) {
    const CliRun r = kvpager(std::string("bench tp-ipc --backend host --tp-size 2 --iters 3 "
                                         "--noop-iters 20 --num-layers 4 --json --map-impl ") +
                             impl);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["map_impl"], impl);
    EXPECT_EQ(j["tp_size"], 2);
    for (const char* key :
         {"map_mean_ms", "map_p95_ms", "map_max_ms", "map_min_ms", "map_per_page_mean_ms",
          "unmap_mean_ms", "unmap_per_page_mean_ms", "noop_p50_us", "noop_mean_us"}) {
      ASSERT_TRUE(j.contains(key)) << key;
      EXPECT_GT(j[key].template get<double>(), 0.0) << key;
    }
  }
}

// The VMM probe's every section, children included, on the host backend (numbers meaningless).
TEST_F(TpBenchCli, VmmProbeRunsEverySection) {
  const CliRun r = kvpager("bench vmm-probe --backend host --samples 20 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["bench"], "vmm-probe");
  std::set<std::string> sections;
  for (const auto& row : j["rows"]) {
    sections.insert(row["section"].get<std::string>());
    EXPECT_GT(row["map_access_us"]["n"].get<int>(), 0) << row["case"];
    EXPECT_GT(row["unmap_us"]["n"].get<int>(), 0) << row["case"];
  }
  for (const char* s : {"first", "resv", "nresv", "mapped", "stride", "ctx", "first(late)"}) {
    EXPECT_TRUE(sections.count(s)) << s;
  }
  ASSERT_EQ(j["coalesce"].size(), 6u);
  EXPECT_FALSE(j["coalesce"][1]["one_unmap_supported"].get<bool>());  // host: one mmap each
  EXPECT_EQ(j["turns"].size(), 4u);
  EXPECT_EQ(j["first_touch"]["first_20_cycles"]["access_us"].size(), 20u);
}

TEST_F(TpBenchCli, TpIpcPrintsTheSeedTable) {
  const CliRun r = kvpager(
      "bench tp-ipc --backend host --tp-size 2 --iters 2 --noop-iters 5 "
      "--num-layers 4 --layout per-layer --map-impl shm -v");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* text : {"=== IPC Benchmark Summary ===", "| per-page mean |",
                           "Broadcast overhead (no-op round trip", "iter   0:"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
}

TEST_F(TpBenchCli, MapParallelPrintsThreeCasesAndTheSpeedUp) {
  CliRun r = kvpager(
      "bench map-parallel --backend host --pages-total 8 --procs 2 --iters 2 "
      "--num-layers 4");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* text : {"Single Process case", "Serial case", "Parallel case (2 procs",
                           "Speedup (parallel vs serial)"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  r = kvpager(
      "bench map-parallel --backend host --pages-total 4 --procs 2 --iters 2 "
      "--num-layers 4 --no-pool --layout per-layer --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["pool"], false);
  for (const char* key : {"single_mean_ms", "serial_mean_ms", "parallel_mean_ms", "speedup_mean"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST_F(TpBenchCli, BadInputIsAUsageError) {
  CliRun r = kvpager("bench tp-ipc --backend host --tp-size 1 --iters 1 --map-impl smoke-signals");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("unknown broadcast strategy"), std::string::npos) << r.out;
  r = kvpager(
      "bench tp-ipc --backend host --tp-size 1 --iters 1 --num-layers 4 "
      "--pages-per-iter 100000000");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("virtual pages"), std::string::npos) << r.out;
  r = kvpager("bench map-parallel --backend host --pages-total 7 --procs 2");
  EXPECT_EQ(r.status, 2) << r.out;
}

}  // namespace

// The core commands end to end on the host backend: demo, bench vmm, bench alloc, exit codes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kvbench_run.hpp"

using kvpager::testing::run_kvpager;

namespace {
const std::vector<std::string> kHostEnv = {"KVPAGER_BACKEND=host"};
}

TEST(CoreCli, DemoShowsMemoryGrowingAndShrinking) {
  auto r = run_kvpager({"demo", "--backend", "host", "--duration", "3", "--peak-rate", "30"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("=== demo summary ==="), std::string::npos);
  // Peak mapped is more than what is left after trim (the null block's page).
  const auto peak = r.out.find("peak mapped");
  const auto trim = r.out.find("mapped after trim");
  ASSERT_NE(peak, std::string::npos);
  ASSERT_NE(trim, std::string::npos);
  EXPECT_EQ(r.out.find("peak mapped                    : 32.00 MiB"), std::string::npos)
      << "the demo never mapped more than one page:\n"
      << r.out;
  EXPECT_NE(r.out.find("mapped after trim              : 32.00 MiB"), std::string::npos) << r.out;
}

TEST(CoreCli, BenchAllocJsonHasTheTableKeys) {
  auto r = run_kvpager({"bench", "alloc", "--backend", "host", "--iters", "2000", "--cold-iters",
                        "5", "--map-pages", "2", "--num-layers", "4", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key :
       {"alloc_free_p99_us", "alloc_free_mean_us", "cold_alloc_p50_us", "per_layer_map_gib_per_s",
        "interleaved_map_gib_per_s", "interleaved_over_per_layer_map_throughput",
        "zero_page_unmap_us_per_page"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_GT(j[key].get<double>(), 0) << key;
  }
  EXPECT_EQ(j["hot_cold_allocs"].get<int>(), 0);  // the reserve served every hot alloc
}

TEST(CoreCli, BenchVmmJsonHasEveryOperation) {
  auto r = run_kvpager({"bench", "vmm", "--backend", "host", "--iters", "10", "--loop-pages", "8",
                        "--loop-iters", "2", "--sweep-mib", "2", "4", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key :
       {"create_mean_us", "map_p99_us", "set_access_mean_us", "unmap_mean_us", "release_mean_us",
        "loop_map_set_access_per_page_us", "handle_4mib_set_access_us_per_2mib"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(CoreCli, BadInputIsExitTwoWithOneLine) {
  auto r = run_kvpager({"demo", "--backend", "gpu"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("unknown backend 'gpu'"), std::string::npos) << r.err;
  r = run_kvpager({"demo", "--limit", "12XB", "--duration", "1"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("invalid size '12XB'"), std::string::npos) << r.err;
  r = run_kvpager({"bench", "vmm", "--iters", "0"});
  EXPECT_EQ(r.rc, 2);
  r = run_kvpager({"bench", "vmm", "--backend", "host", "--sweep-mib", "0"});  // was SIGFPE
  EXPECT_EQ(r.rc, 2) << r.err;
  r = run_kvpager({"bench", "vmm", "--backend", "host", "--sweep-mib", "2", "-3"});
  EXPECT_EQ(r.rc, 2) << r.err;
  r = run_kvpager({"no-such-command"});
  EXPECT_EQ(r.rc, 2);
}

TEST(CoreCli, CudaBackendWithoutADriverIsARuntimeFailure) {
  if (std::getenv("KVPAGER_TEST_HAS_GPU")) GTEST_SKIP() << "a GPU is present";
  auto r = run_kvpager({"bench", "vmm", "--backend", "cuda", "--iters", "1"});
  if (r.rc == 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("CUDA"), std::string::npos) << r.err;
}

// Bad input to the kvpager binary (issue 20 items 5 and 14): every case exits 2 at once with
// exactly one line on stderr, prefixed "kvpager: error: ", naming the flag and no 309-digit
// number; nothing runs, nothing grows, nothing is left in the registry.
#include <dirent.h>
#include <gtest/gtest.h>

#include <regex>

#include "cli/timed_run.hpp"

using namespace kvpager::testing;

namespace {

class CliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    if (timed_run_binary().empty()) GTEST_SKIP() << "KVPAGER_BINARY is not set";
    prefix_ = "kvptest-" + std::to_string(::getpid()) + "-errors-";
  }
  // A case that wrongly started something must not leave its segments behind.
  void TearDown() override {
    DIR* d = ::opendir("/dev/shm");
    if (!d) return;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.rfind(prefix_, 0) == 0) ::unlink(("/dev/shm/" + name).c_str());
    }
    ::closedir(d);
  }
  // Runs kvpager with `args` in a registry namespace of its own; at most 8 GiB of address
  // space, so a plan that grows without bound fails instead of swapping the machine.
  TimedRun run(const std::vector<std::string>& args) {
    TimedRunOptions o;
    o.limit = std::chrono::seconds(20);
    o.env = {"KVPAGER_SHM_PREFIX=" + prefix_};
    o.address_space_bytes = 8ull << 30;
    return timed_run(args, o);
  }
  // The case is refused as bad input: exit 2, one prefixed line, and quickly.
  void expect_usage_error(const std::vector<std::string>& args, const std::string& mentions) {
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    SCOPED_TRACE("kvpager" + cmd);
    const TimedRun r = run(args);
    ASSERT_TRUE(r.exited) << "signal " << r.signal << (r.interrupted ? " (ran past 20 s)" : "")
                          << "\n"
                          << r.err;
    EXPECT_EQ(r.code, 2) << r.err;
    const auto lines = lines_of(r.err);
    ASSERT_EQ(lines.size(), 1u) << r.err;
    EXPECT_EQ(lines[0].rfind("kvpager: error: ", 0), 0u) << r.err;
    EXPECT_NE(lines[0].find(mentions), std::string::npos) << r.err;
    EXPECT_FALSE(std::regex_search(lines[0], std::regex("[0-9]{40}"))) << r.err;
    EXPECT_EQ(lines[0].find("bad_alloc"), std::string::npos) << r.err;
    EXPECT_LT(r.took, std::chrono::seconds(5)) << "found late";
  }
  std::string prefix_;
};

TEST_F(CliErrors, ParseErrorsAreOneLineWithThePrefix) {
  expect_usage_error({}, "subcommand");
  expect_usage_error({"list", "--no-such-flag"}, "--no-such-flag");
  expect_usage_error({"demo", "--instances"}, "--instances");
  expect_usage_error({"demo", "--duration", "1e308"}, "--duration");
  expect_usage_error({"demo", "--bursts", "x"}, "--bursts");
  expect_usage_error({"bench", "vmm", "--iters", "99999999999999999999999"}, "--iters");
}

TEST_F(CliErrors, DemoRatesAreBoundedAndNotNaN) {
  for (const char* flag : {"--peak-rate", "--idle-rate"}) {
    for (const char* value : {"1e308", "nan", "NaN", "inf", "-1", "1e7"}) {
      expect_usage_error({"demo", "--backend", "host", flag, value}, flag);
    }
  }
}

TEST_F(CliErrors, DemoLayoutIsCheckedBeforeAnythingStarts) {
  expect_usage_error({"demo", "--backend", "host", "--layout", "diagonal"}, "diagonal");
  expect_usage_error({"demo", "--backend", "host", "--capacity", "1e30"}, "--capacity");
}

TEST_F(CliErrors, WatchCountMustBeAPositiveNumberThatEnds) {
  for (const char* value : {"-1", "-5", "18446744073709551616", "18446744073709551615", "nan"}) {
    expect_usage_error({"watch", "--count", value}, "--count");
  }
}

TEST_F(CliErrors, HugeGeometryIsUsageNotMmapFailure) {
  for (const char* flag : {"--num-layers", "--kv-heads", "--block-size", "--head-dim"}) {
    expect_usage_error({"bench", "alloc", "--backend", "host", flag, "4000000000"}, flag);
    // Within each flag's range, but too big together: refused before anything is mapped.
    expect_usage_error({"bench", "alloc", "--backend", "host", flag, "1024"}, "bench alloc");
  }
  expect_usage_error({"bench", "alloc", "--backend", "host", "--map-pages", "64"}, "--map-pages");
}

TEST_F(CliErrors, HugePlanIsRefusedNotAllocated) {
  const std::string models =
      std::string(std::getenv("KVPAGER_SOURCE_DIR") ? std::getenv("KVPAGER_SOURCE_DIR") : ".") +
      "/models";
  // 4e18 tokens overflow the model's byte count; 1e13 make a plan of 6e12 blocks, which used
  // to map the 8 GiB buffer and then build descriptors until the kernel killed the process.
  for (const char* isl : {"4000000000000000000", "10000000000000"}) {
    expect_usage_error(
        {"kvbench", "profile", "--model", models + "/examples/model_deepseek_r1.yaml",
         "--model_config", models + "/examples/block-tp1-pp16.yaml", "--isl", isl, "--backend",
         "POSIX"},
        std::string(isl).size() > 15 ? "overflows" : "--isl");
  }
}

TEST_F(CliErrors, ControlCharactersInMessagesAreEscaped) {
  const TimedRun r = run({"demo", "--layout", "bad\nlayout\x1b[2J"});
  EXPECT_EQ(r.code, 2) << r.err;
  const auto lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_NE(lines[0].find("bad\\nlayout\\x1b[2J"), std::string::npos) << r.err;
}

}  // namespace

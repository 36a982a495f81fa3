// `kvpager demo` on the host backend, short: the model instances run as processes, share the
// budget (never above it), and the summary shows every instance served its requests.
#include <gtest/gtest.h>

#include "limits/child_process.hpp"
#include "limits/registry_test_support.hpp"

using namespace kvpager::testing;

TEST(CliDemo, InstancesShareTheBudgetAndTheSummaryShowsIt) {
  ASSERT_FALSE(kvpager_binary().empty()) << "KVPAGER_BINARY is not set";
  ScopedRegistry reg("demo");
  const CommandResult r =
      run_command({kvpager_binary(), "demo", "--backend", "host", "--duration", "4", "--capacity",
                   "1GiB", "--budget", "512M", "--peak-rate", "8", "--prefix", reg.config.prefix},
                  {});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("3 model instances (processes)"), std::string::npos) << r.out;
  for (const char* busy : {"s busy a |", "s busy b |", "s busy c |"}) {  // live lines
    EXPECT_NE(r.out.find(busy), std::string::npos) << busy << r.out;
  }
  EXPECT_NE(r.out.find("=== demo summary ==="), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 processes on host0, budget 512.00 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mapped after trim              : 32.00 MiB"), std::string::npos) << r.out;
  for (const char* name : {"\ndemo-a ", "\ndemo-b ", "\ndemo-c "}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name << r.out;
  }
  EXPECT_NE(r.out.find("never above"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory followed the load"), std::string::npos) << r.out;
  const CommandResult bad = run_command({kvpager_binary(), "demo", "--instances", "9"}, {});
  EXPECT_EQ(bad.status, 2);
}

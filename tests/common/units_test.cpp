#include "kvpager/common/units.hpp"

#include <gtest/gtest.h>

#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"

using namespace kvpager;

TEST(ParseSize, AcceptsBytesAndBinarySuffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("512M"), 512 * MiB);
  EXPECT_EQ(parse_size("2GiB"), 2 * GiB);
  EXPECT_EQ(parse_size("1.5G"), 3 * GiB / 2);
  EXPECT_EQ(parse_size("64k"), 64 * KiB);
  EXPECT_EQ(parse_size("10B"), 10u);
  EXPECT_EQ(parse_size("1TB"), 1024 * GiB);
}

TEST(ParseSize, RejectsGarbageWithTheInputInTheMessage) {
  for (const char* bad : {"", "-1G", "12XB", "G", "1.2.3M", "5 M", "1e3"}) {
    try {
      parse_size(bad);
      FAIL() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos);
    }
  }
}

TEST(FormatSize, PicksTheLargestUnit) {
  EXPECT_EQ(format_size(12), "12 B");
  EXPECT_EQ(format_size(3 * GiB / 2), "1.50 GiB");
  EXPECT_EQ(format_size(512 * MiB), "512.00 MiB");
}

TEST(Summarize, NearestRankPercentiles) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  const auto s = summarize(v);
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.p50, 50);
  EXPECT_DOUBLE_EQ(s.p99, 99);
  EXPECT_DOUBLE_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_EQ(summarize({}).count, 0u);
}

#include "kvpager/limits/memory_budget.hpp"

TEST(LocalBudget, ChargesUpToTheLimitAndNeverPast) {
  kvpager::limits::LocalBudget b(100);
  EXPECT_TRUE(b.try_charge(60));
  EXPECT_FALSE(b.try_charge(41));
  EXPECT_EQ(b.charged_bytes(), 60u);
  EXPECT_TRUE(b.try_charge(40));
  EXPECT_FALSE(b.try_charge(1));
  b.uncharge(50);
  b.set_limit(40);  // below the charge: refuses until enough is uncharged
  EXPECT_FALSE(b.try_charge(1));
  b.uncharge(20);
  EXPECT_TRUE(b.try_charge(10));
  EXPECT_FALSE(b.try_charge(UINT64_MAX));
}

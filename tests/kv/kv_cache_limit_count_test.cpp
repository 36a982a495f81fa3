// Issue 20 item 14: KvCache with limit_bytes=1 reported 2^64 - 1 blocks in use (the count
// subtracted the null block before the null block existed). The counts stay honest.
#include <gtest/gtest.h>

#include <string>

#include "kv_test_support.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"

namespace kvpager::kv {
namespace {

using testing::small_cache_config;
using testing::test_host_backend;

TEST(KvCacheLimitCount, ALimitBelowOnePageIsRefusedWithHonestCounts) {
  KvCacheConfig c = small_cache_config(KvLayout::kInterleaved, 64);
  c.limit_bytes = 1;
  try {
    KvCache cache(test_host_backend(), c);
    FAIL() << "a 1-byte limit cannot hold the null block's page";
  } catch (const OutOfMemory& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("18446744073709551615"), std::string::npos) << what;
    EXPECT_NE(what.find("0 blocks in use"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace kvpager::kv

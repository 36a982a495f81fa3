#include "kvpager/common/env_number.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kvpager/common/error.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/limits/registry_config.hpp"
#include "kvpager/tp/tp_config.hpp"
#include "kvpager/vmm/backend.hpp"

using namespace kvpager;

namespace {

// The message of the InvalidArgument `f` throws; fails the test when it throws nothing.
template <typename F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted";
  return "";
}

// Sets one variable for the lifetime of the object.
struct ScopedEnv {
  const char* name;
  ScopedEnv(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~ScopedEnv() { unsetenv(name); }
};

}  // namespace

TEST(ParseEnvNumber, AcceptsDigitsWithinTheRange) {
  EXPECT_EQ(parse_env_number("V", "0", "n"), 0u);
  EXPECT_EQ(parse_env_number("V", "42", "n"), 42u);
  EXPECT_EQ(parse_env_number("V", "18446744073709551615", "n"), UINT64_MAX);
  EXPECT_EQ(parse_env_number("V", "10", "n", 10, 50), 10u);
  EXPECT_EQ(parse_env_number("V", "50", "n", 10, 50), 50u);
  EXPECT_EQ(parse_env_number("V", "0640", "mode", 0600, 0777, 8), 0640u);
}

TEST(ParseEnvNumber, RefusesEverythingElseNamingTheVariableAndValue) {
  for (const char* bad : {"", "1x", "x1", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "8G",
                          "18446744073709551616"}) {
    const std::string why = refusal([&] { parse_env_number("KVPAGER_X", bad, "a number"); });
    EXPECT_EQ(why, std::string("KVPAGER_X='") + bad + "' is not a number") << bad;
  }
  EXPECT_EQ(refusal([] { parse_env_number("V", "51", "a count", 10, 50); }),
            "V='51' is not a count (10 to 50)");
  EXPECT_EQ(refusal([] { parse_env_number("V", "9", "a count", 10, 50); }),
            "V='9' is not a count (10 to 50)");
  EXPECT_EQ(refusal([] { parse_env_number("M", "0500", "a mode", 0600, 0777, 8); }),
            "M='0500' is not a mode (0600 to 0777)");
  EXPECT_NE(refusal([] { parse_env_number("M", "0800", "a mode", 0, 0777, 8); }), "");
}

// Every layer reads its numbers through the one parser: a value with trailing text, a sign or
// nothing at all is refused, never read as its leading digits or wrapped around.
TEST(ParseEnvNumber, EveryLayersVariablesAreStrict) {
  {
    ScopedEnv e("KVPAGER_DEVICE", "1x");
    EXPECT_EQ(refusal([] { vmm::backend_config_from_env(); }),
              "KVPAGER_DEVICE='1x' is not a device number (0 to 2147483647)");
  }
  {
    ScopedEnv e("KVPAGER_DEVICE", "3");
    EXPECT_EQ(vmm::backend_config_from_env().device, 3);
  }
  {
    ScopedEnv e("KVPAGER_SHAREABLE_HANDLES", "yes");
    EXPECT_NE(refusal([] { vmm::backend_config_from_env(); }), "");
  }
  {
    ScopedEnv e("KVPAGER_RESERVE_PAGES", "-1");
    EXPECT_NE(refusal([] { kv::kv_cache_config_from_env({}); }), "");
  }
  {
    ScopedEnv e("KVPAGER_LOCK_TIMEOUT_MS", "100ms");
    EXPECT_NE(refusal([] { limits::registry_config_from_env(); }), "");
  }
  {
    ScopedEnv e("KVPAGER_SHM_MODE", "0660 ");
    EXPECT_NE(refusal([] { limits::registry_config_from_env(); }), "");
  }
  {
    ScopedEnv e("KVPAGER_TP_TIMEOUT_MS", "-1");  // strtoull read it as 2^64 - 1
    EXPECT_EQ(refusal([] { tp::tp_config_from_env(); }),
              "KVPAGER_TP_TIMEOUT_MS='-1' is not a non-negative integer");
  }
}

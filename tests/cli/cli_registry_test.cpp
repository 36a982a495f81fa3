// The registry commands of the kvpager binary, run as real processes against a private
// registry namespace: output, --json, exit codes, and that bad input changes nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "kvpager/common/units.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "kvpager/limits/registry.hpp"
#include "limits/child_process.hpp"
#include "limits/registry_test_support.hpp"

using namespace kvpager;
using namespace kvpager::limits;
using namespace kvpager::testing;

namespace {

class CliRegistry : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(kvpager_binary().empty()) << "KVPAGER_BINARY is not set";
    reg_.config.gpu_utilization = "1G";
    live_ = InstanceRegistration::create(reg_.config,
                                         {"live-a", "llama-3-8b", "host0", 4 * GiB, 512 * MiB});
    ASSERT_TRUE(live_->try_charge(64 * MiB));
    // A process that registered and vanished: a stale segment.
    const pid_t pid = ::fork();
    if (pid == 0) {
      try {
        auto r = InstanceRegistration::create(
            reg_.config, {"gone-b", "qwen", "host0", 4 * GiB, format::kUnlimited});
        // no destructors: the segment and the charge stay behind; 2: the charge was refused
        ::_exit(r->try_charge(32 * MiB) ? 0 : 2);
      } catch (...) {
        ::_exit(1);
      }
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    ASSERT_EQ(WEXITSTATUS(st), 0);
  }
  void TearDown() override {
    if (live_) live_->uncharge(64 * MiB);
  }

  CommandResult kvpager(std::vector<std::string> args) {
    args.insert(args.begin(), kvpager_binary());
    return run_command(args, reg_.env);
  }
  InstanceRecord record(const std::string& name) {
    for (const auto& s : Registry(reg_.config).scan().instances) {
      if (s.record.name == name) return s.record;
    }
    return {};
  }

  ScopedRegistry reg_{"cli"};
  std::shared_ptr<InstanceRegistration> live_;
};

size_t lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace

TEST_F(CliRegistry, BadInputIsOneLineOnStderrExit2AndChangesNothing) {
  const std::vector<std::vector<std::string>> bad = {{"limit", "live-a", "12XB"},
                                                     {"limit", "live-a", "-1G"},
                                                     {"limit", "live-a", ""},
                                                     {"limit", "nobody", "1G"},
                                                     {"limit", "../etc/passwd", "1G"},
                                                     {"limit", "a/b", "1G"},
                                                     {"limit-percent", "live-a", "101%"},
                                                     {"limit-percent", "live-a", "-3"},
                                                     {"limit-percent", "nobody", "10"},
                                                     {"budget", "host0", "101%"},
                                                     {"budget", "host0", "12XB"},
                                                     {"budget", "host0", "-1G"},
                                                     {"budget", "cuda7", "1G"},
                                                     {"budget", "7", "50%"},
                                                     {"guarantee", "live-a", "12XB"},
                                                     {"guarantee", "live-a", "-1G"},
                                                     {"guarantee", "live-a", "2G"},
                                                     {"guarantee", "nobody", "1G"},
                                                     {"guarantee-percent", "live-a", "101"},
                                                     {"delete", "nobody"},
                                                     {"watch", "-n", "0"}};
  for (const auto& args : bad) {
    const CommandResult r = kvpager(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(r.status, 2) << shown << r.err;
    EXPECT_EQ(lines(r.err), 1u) << shown << r.err;
    EXPECT_EQ(r.err.rfind("kvpager: error: ", 0), 0u) << shown << r.err;
    EXPECT_TRUE(r.out.empty()) << shown << r.out;
  }
  const InstanceRecord a = record("live-a");
  EXPECT_EQ(a.limit_bytes, 512 * MiB);
  EXPECT_EQ(a.revision, 0u);
  EXPECT_EQ(live_->device_budget().budget_bytes(), 1 * GiB);
  EXPECT_EQ(live_->guarantee_bytes(), 0u);
}

TEST_F(CliRegistry, ListShowsInstancesAsTextAndJson) {
  const CommandResult text = kvpager({"list"});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("host0"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("live-a"), std::string::npos);
  EXPECT_NE(text.out.find("llama-3-8b"), std::string::npos);
  EXPECT_NE(text.out.find("512.00 MiB"), std::string::npos);
  EXPECT_NE(text.out.find("alive"), std::string::npos);
  EXPECT_NE(text.out.find("stale"), std::string::npos);

  const CommandResult js = kvpager({"list", "--json"});
  ASSERT_EQ(js.status, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  ASSERT_EQ(j["instances"].size(), 2u);
  EXPECT_EQ(j["instances"][0]["name"], "gone-b");
  EXPECT_EQ(j["instances"][0]["alive"], false);
  EXPECT_TRUE(j["instances"][0]["limit_bytes"].is_null());
  EXPECT_EQ(j["instances"][1]["name"], "live-a");
  EXPECT_EQ(j["instances"][1]["pid"], ::getpid());
  EXPECT_EQ(j["instances"][1]["mapped_bytes"], 64 * MiB);
  EXPECT_EQ(j["instances"][1]["limit_bytes"], 512 * MiB);
  ASSERT_EQ(j["devices"].size(), 1u);
  EXPECT_EQ(j["devices"][0]["budget_bytes"], GiB);
  EXPECT_EQ(j["devices"][0]["charged_bytes"], 96 * MiB);
  EXPECT_EQ(j["devices"][0]["live_members"], 1);
  EXPECT_TRUE(j["skipped"].empty());
  const CommandResult top = kvpager({"top", "--json"});  // the same snapshot, no terminal
  ASSERT_EQ(top.status, 0) << top.err;
  EXPECT_EQ(nlohmann::json::parse(top.out)["instances"].size(), 2u);
  EXPECT_EQ(kvpager({"top"}).status, 1);  // no terminal: one clear line, exit 1
}

TEST_F(CliRegistry, LimitAcceptsEverySizeFormAndBumpsTheRevision) {
  const std::vector<std::pair<std::string, uint64_t>> sizes = {
      {"512M", 512 * MiB}, {"2GiB", 2 * GiB}, {"1.5G", 3 * GiB / 2}, {"1048576", MiB}};
  uint64_t revision = 0;
  for (const auto& [text, bytes] : sizes) {
    const CommandResult r = kvpager({"limit", "live-a", text});
    ASSERT_EQ(r.status, 0) << text << r.err;
    EXPECT_EQ(live_->instance_limit_bytes(), bytes) << text;
    EXPECT_EQ(record("live-a").revision, ++revision);
  }
  EXPECT_NE(kvpager({"limit", "live-a", "none"}).out.find("limit none"), std::string::npos);
  ASSERT_EQ(kvpager({"limit-percent", "live-a", "12.5%"}).status, 0);
  EXPECT_EQ(live_->instance_limit_bytes(), 512 * MiB);  // of the device's 4 GiB
  const CommandResult b = kvpager({"budget", "host:0", "50%"});
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(live_->device_budget().budget_bytes(), 2 * GiB);
  ASSERT_EQ(kvpager({"budget", "host0", "3G"}).status, 0);
  EXPECT_EQ(live_->device_budget().budget_bytes(), 3 * GiB);
}

TEST_F(CliRegistry, GuaranteeShowsInListAndStaysWithinTheBudget) {
  const CommandResult set = kvpager({"guarantee", "live-a", "256M"});
  ASSERT_EQ(set.status, 0) << set.err;
  EXPECT_EQ(set.out, "live-a: guarantee 256.00 MiB (was none)\n");
  EXPECT_EQ(live_->guarantee_bytes(), 256 * MiB);  // the instance's own view of its slot

  const CommandResult text = kvpager({"list"});
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("GUARANTEE"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("256.00 MiB"), std::string::npos) << text.out;
  auto j = nlohmann::json::parse(kvpager({"list", "--json"}).out);
  EXPECT_EQ(j["instances"][0]["name"], "gone-b");
  EXPECT_EQ(j["instances"][0]["guarantee_bytes"], 0);
  EXPECT_EQ(j["instances"][1]["name"], "live-a");
  EXPECT_EQ(j["instances"][1]["guarantee_bytes"], 256 * MiB);
  EXPECT_EQ(j["instances"][1]["claiming"], false);  // it holds 64 MiB but has not asked

  // Above the budget: refused, naming the budget; nothing changed.
  const CommandResult over = kvpager({"guarantee", "live-a", "2G"});
  EXPECT_EQ(over.status, 2);
  EXPECT_NE(over.err.find("budget of 1.00 GiB"), std::string::npos) << over.err;
  EXPECT_EQ(live_->guarantee_bytes(), 256 * MiB);

  // A second member's guarantee counts towards the sum.
  RegistryConfig patient = reg_.config;
  patient.claim_ttl = std::chrono::milliseconds(10'000);  // outlives the CLI's start-up
  auto other = InstanceRegistration::create(
      patient, {"live-c", "mistral", "host0", 4 * GiB, format::kUnlimited, 512 * MiB});
  const CommandResult sum = kvpager({"guarantee", "live-a", "600M"});
  EXPECT_EQ(sum.status, 2);
  EXPECT_NE(sum.err.find("guarantees to 1.09 GiB"), std::string::npos) << sum.err;
  EXPECT_EQ(live_->guarantee_bytes(), 256 * MiB);

  // live-c holds nothing of its 512 MiB and waits for 128 MiB: it claims that much...
  other->ask_for_room(128 * MiB);
  j = nlohmann::json::parse(kvpager({"list", "--json"}).out);
  ASSERT_EQ(j["instances"].size(), 3u);
  EXPECT_EQ(j["instances"][2]["name"], "live-c");
  EXPECT_EQ(j["instances"][2]["guarantee_bytes"], 512 * MiB);
  EXPECT_EQ(j["instances"][2]["claiming"], true);
  EXPECT_EQ(j["instances"][2]["claimed_bytes"], 128 * MiB);
  EXPECT_EQ(j["instances"][1]["claiming"], false);
  EXPECT_EQ(j["instances"][1]["claimed_bytes"], 0);
  // ...then for as much as its guarantee (0): the live claim grows to all 512 MiB.
  other->ask_for_room(0);
  j = nlohmann::json::parse(kvpager({"list", "--json"}).out);
  EXPECT_EQ(j["instances"][2]["claimed_bytes"], 512 * MiB);
  bool listed = false;  // the device's member table says the same
  for (const auto& m : j["devices"][0]["members"]) {
    if (m["name"] == "live-c") {
      listed = true;
      EXPECT_EQ(m["claimed_bytes"], 512 * MiB);
    }
  }
  EXPECT_TRUE(listed);

  // The budget may not drop below the guarantees' sum (768 MiB).
  const CommandResult low = kvpager({"budget", "host0", "512M"});
  EXPECT_EQ(low.status, 2);
  EXPECT_NE(low.err.find("guarantees"), std::string::npos) << low.err;
  EXPECT_EQ(live_->device_budget().budget_bytes(), 1 * GiB);
  ASSERT_EQ(kvpager({"budget", "host0", "768M"}).status, 0);
  EXPECT_EQ(live_->device_budget().budget_bytes(), 768 * MiB);

  // Removing a guarantee frees its share of the budget.
  const CommandResult none = kvpager({"guarantee", "live-a", "none"});
  ASSERT_EQ(none.status, 0) << none.err;
  EXPECT_EQ(none.out, "live-a: guarantee none (was 256.00 MiB)\n");
  EXPECT_EQ(live_->guarantee_bytes(), 0u);
  ASSERT_EQ(kvpager({"budget", "host0", "512M"}).status, 0);
  ASSERT_EQ(kvpager({"guarantee", "live-c", "0"}).status, 0);
  EXPECT_EQ(other->guarantee_bytes(), 0u);
  ASSERT_EQ(kvpager({"guarantee-percent", "live-a", "25%"}).status, 0);
  EXPECT_EQ(live_->guarantee_bytes(), 128 * MiB);  // of the 512 MiB budget

  // A dead instance has no share to guarantee.
  const CommandResult dead = kvpager({"guarantee", "gone-b", "1M"});
  EXPECT_EQ(dead.status, 1);
  EXPECT_NE(dead.err.find("kvpager gc"), std::string::npos) << dead.err;
}

TEST_F(CliRegistry, DeleteRefusesALiveInstanceWithoutForceAndGcTakesTheStaleOne) {
  const CommandResult refused = kvpager({"delete", "live-a"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("alive"), std::string::npos) << refused.err;
  EXPECT_EQ(::access(reg_.path("inst-live-a").c_str(), F_OK), 0);

  const CommandResult gone = kvpager({"delete", "gone-b"});
  EXPECT_EQ(gone.status, 0) << gone.err;
  EXPECT_NE(::access(reg_.path("inst-gone-b").c_str(), F_OK), 0);
  EXPECT_EQ(live_->device_budget().snapshot_locked().charged_bytes, 64 * MiB);  // its 32 MiB went

  const CommandResult forced = kvpager({"delete", "--force", "live-a"});
  EXPECT_EQ(forced.status, 0) << forced.err;
  EXPECT_NE(::access(reg_.path("inst-live-a").c_str(), F_OK), 0);
}

TEST_F(CliRegistry, GcRemovesDeadInstancesAndReclaimsTheirAccounting) {
  const CommandResult r = kvpager({"gc", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["removed_instances"], nlohmann::json::array({"gone-b"}));
  EXPECT_EQ(j["reclaimed_bytes"], 32 * MiB);
  EXPECT_EQ(Registry(reg_.config).scan().instances.size(), 1u);
  EXPECT_EQ(live_->device_budget().snapshot_locked().charged_bytes, 64 * MiB);
}

TEST_F(CliRegistry, CorruptSegmentsAreReportedAndSkipped) {
  std::ofstream(reg_.path("inst-junk")) << "definitely not a segment";
  std::ofstream(reg_.path("random")) << std::string(5000, '\x5a');
  const CommandResult r = kvpager({"list"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.err.find("skipped " + reg_.path("inst-junk")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("skipped " + reg_.path("random")), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("live-a"), std::string::npos);
  const auto j = nlohmann::json::parse(kvpager({"list", "--json"}).out);
  EXPECT_EQ(j["skipped"].size(), 2u);
  EXPECT_EQ(kvpager({"limit", "junk", "1G"}).status, 1);  // unusable segment: refused
  EXPECT_EQ(kvpager({"gc"}).status, 0);
  EXPECT_EQ(::access(reg_.path("inst-junk").c_str(), F_OK), 0);  // never deleted on a guess
}

TEST_F(CliRegistry, WatchRefreshesAPlainTextTable) {
  const CommandResult r = kvpager({"watch", "-n", "0.1", "--count", "3"});
  ASSERT_EQ(r.status, 0) << r.err;
  size_t tables = 0;
  for (size_t at = 0; (at = r.out.find("Every 0.1s", at)) != std::string::npos; ++at) ++tables;
  EXPECT_EQ(tables, 3u) << r.out;
  const CommandResult js = kvpager({"watch", "-n", "0.1", "--count", "2", "--json"});
  ASSERT_EQ(js.status, 0);
  EXPECT_EQ(lines(js.out), 2u);
  EXPECT_EQ(nlohmann::json::parse(js.out.substr(0, js.out.find('\n')))["instances"].size(), 2u);
}

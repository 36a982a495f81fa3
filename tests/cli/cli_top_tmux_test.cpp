// `kvpager top` driven in a real terminal: an 80x24 tmux pane on a private tmux server,
// keys sent with send-keys, the screen read back with capture-pane.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "kvpager/common/units.hpp"
#include "kvpager/limits/instance_registration.hpp"
#include "limits/child_process.hpp"
#include "limits/registry_test_support.hpp"
#include "support/wait_until.hpp"

using namespace kvpager;
using namespace kvpager::limits;
using namespace kvpager::testing;
using namespace std::chrono_literals;

namespace {

std::string which(const std::string& tool) {
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/bin/"}) {
    const std::string p = dir + tool;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

class TopInTmux : public ::testing::Test {
 protected:
  void SetUp() override {
    tmux_ = which("tmux");
    if (tmux_.empty()) GTEST_SKIP() << "tmux is not installed (scripts/setup.sh installs it)";
    ASSERT_FALSE(kvpager_binary().empty()) << "KVPAGER_BINARY is not set";
    socket_ = "kvptest-top-" + std::to_string(::getpid());
    reg_.config.gpu_utilization = "16M";
    alpha_ = InstanceRegistration::create(reg_.config,
                                          {"alpha", "llama", "host0", GiB, 8 * MiB, 2 * MiB});
    beta_ = InstanceRegistration::create(reg_.config,
                                         {"beta", "qwen", "host0", GiB, format::kUnlimited});
    ASSERT_TRUE(alpha_->try_charge(1 * MiB));
    ASSERT_TRUE(beta_->try_charge(3 * MiB));
    alpha_->poll({512 * KiB});  // publishes used bytes, as a KvCache's thread does
  }
  void TearDown() override {
    if (!tmux_.empty()) tmux({"kill-server"});
    if (alpha_) alpha_->uncharge(alpha_->charged_bytes());
    if (beta_) beta_->uncharge(beta_->charged_bytes());
  }

  CommandResult tmux(std::vector<std::string> args) {
    args.insert(args.begin(), {tmux_, "-L", socket_, "-f", "/dev/null"});
    return run_command(args, {});
  }
  std::string screen() { return tmux({"capture-pane", "-p", "-t", "top"}).out; }
  bool screen_shows(const std::string& text) {
    return wait_until([&] { return screen().find(text) != std::string::npos; }, 15s);
  }
  static size_t row_of(const std::string& screen, const std::string& text) {
    std::istringstream in(screen);
    std::string line;
    for (size_t row = 0; std::getline(in, line); ++row) {
      if (line.find(text) != std::string::npos) return row;
    }
    return std::string::npos;
  }

  ScopedRegistry reg_{"top"};
  std::string tmux_, socket_;
  std::shared_ptr<InstanceRegistration> alpha_, beta_;
};

}  // namespace

TEST_F(TopInTmux, ShowsBudgetAndInstancesSortsRefreshesAndQuits) {
  const std::string cmd = "env TERM=screen KVPAGER_SHM_DIR=" + reg_.config.dir +
                          " KVPAGER_SHM_PREFIX=" + reg_.config.prefix + " " + kvpager_binary() +
                          " top -n 1";
  const CommandResult started =
      tmux({"new-session", "-d", "-s", "top", "-x", "80", "-y", "24", cmd});
  ASSERT_EQ(started.status, 0) << started.err;
  ASSERT_TRUE(screen_shows("beta")) << screen();

  std::string s = screen();
  EXPECT_NE(s.find("kvpager top"), std::string::npos) << s;
  EXPECT_NE(s.find("sort:mapped"), std::string::npos) << s;
  EXPECT_NE(row_of(s, "host0"), std::string::npos) << s;
  EXPECT_NE(s.find("4M/16M"), std::string::npos) << s;    // the device budget bar's figures
  EXPECT_LT(row_of(s, "beta"), row_of(s, "alpha")) << s;  // 3 MiB mapped before 1 MiB
  std::istringstream rows(s);
  std::string line;
  size_t count = 0;
  while (std::getline(rows, line)) {
    EXPECT_LE(line.size(), 80u) << line;
    ++count;
  }
  EXPECT_LE(count, 24u);
  const size_t alpha_row = row_of(s, "alpha");
  std::istringstream again(s);
  for (size_t i = 0; i <= alpha_row; ++i) std::getline(again, line);
  // Half of alpha's 1 MiB is in use: '=' then '+', then '.' up to its 8 MiB limit.
  EXPECT_NE(line.find("[="), std::string::npos) << line;
  EXPECT_NE(line.find("=+"), std::string::npos) << line;
  EXPECT_NE(line.find("+....."), std::string::npos) << line;
  EXPECT_NE(line.find("512K"), std::string::npos) << line;
  EXPECT_NE(line.find("8M"), std::string::npos) << line;
  EXPECT_NE(line.find(" 2M alive"), std::string::npos) << line;  // its guarantee
  EXPECT_NE(s.find("GUAR"), std::string::npos) << s;
  std::istringstream beta_rows(s);
  for (size_t i = 0; i <= row_of(s, "beta"); ++i) std::getline(beta_rows, line);
  EXPECT_NE(line.find(" - alive"), std::string::npos) << line;  // no guarantee

  // Live: alpha grows past beta and moves to the top.
  ASSERT_TRUE(alpha_->try_charge(5 * MiB));
  ASSERT_TRUE(wait_until(
      [&] {
        const std::string now = screen();
        return now.find("6M") != std::string::npos && row_of(now, "alpha") < row_of(now, "beta");
      },
      15s))
      << screen();

  tmux({"send-keys", "-t", "top", "s"});
  ASSERT_TRUE(screen_shows("sort:used")) << screen();
  tmux({"send-keys", "-t", "top", "s", "s"});
  ASSERT_TRUE(screen_shows("sort:name")) << screen();
  s = screen();
  EXPECT_LT(row_of(s, "alpha"), row_of(s, "beta")) << s;

  tmux({"send-keys", "-t", "top", "+"});
  ASSERT_TRUE(screen_shows("every 0.5s")) << screen();
  tmux({"send-keys", "-t", "top", "-", "-"});
  ASSERT_TRUE(screen_shows("every 2.0s")) << screen();

  tmux({"send-keys", "-t", "top", "q"});
  EXPECT_TRUE(wait_until([&] { return tmux({"has-session", "-t", "top"}).status != 0; }, 15s));
}

TEST_F(TopInTmux, ExitsWhenItsTerminalGoesAway) {
  // A closed terminal (the tmux session killed under it) used to leave `top` redrawing into
  // nothing in a busy loop, forever.
  const std::string pid_file = reg_.config.dir + "/" + reg_.config.prefix + "top.pid";
  const std::string cmd = "env TERM=screen KVPAGER_SHM_DIR=" + reg_.config.dir +
                          " KVPAGER_SHM_PREFIX=" + reg_.config.prefix + " sh -c 'echo $$ > " +
                          pid_file + "; exec " + kvpager_binary() + " top -n 0.5'";
  ASSERT_EQ(tmux({"new-session", "-d", "-s", "top", "-x", "80", "-y", "24", cmd}).status, 0);
  ASSERT_TRUE(screen_shows("beta")) << screen();
  pid_t pid = 0;
  {
    std::ifstream in(pid_file);
    in >> pid;
  }
  ASSERT_GT(pid, 0);
  tmux({"kill-session", "-t", "top"});
  EXPECT_TRUE(wait_until([&] { return ::kill(pid, 0) != 0; }, 10s))
      << "kvpager top (pid " << pid << ") still runs after its terminal closed";
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
  std::remove(pid_file.c_str());
}

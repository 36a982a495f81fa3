// Fuzz of the kvpager binary's command line (issue 20 "Must show"): random argument vectors —
// real commands and flags mixed with hostile values (huge, negative, NaN, 2^64, empty, control
// characters, unknown flags, long strings) — each run as a real process under a time limit.
// Asserts for every try: no death by a signal (crash), no hang (a run past the limit must stop
// within the grace after SIGTERM), exit status 0, 1 or 2, and an error report that is one
// line (exit 2) or ends in one line (exit 1) prefixed "kvpager: error: ", with no
// "bad_alloc", no "terminate called" and no 40-digit number.
//
// Everything runs in a throw-away registry namespace and folder: KVPAGER_SHM_PREFIX of its
// own, TMPDIR and the working folder in a fresh temporary folder, at most 2 GiB of address
// space and 256 MiB per file (a plan that would grow without bound fails instead), and
// --prefix values only inside that namespace.
//
// CI: a few seconds (KVPAGER_FUZZ_SECONDS, default 8; KVPAGER_FUZZ_TRIES, default 400; seed
// KVPAGER_FUZZ_SEED, default 20; KVPAGER_FUZZ_LIMIT_MS per run, default 3000). By hand, for
// the counts in docs/benchmarks.md:
//   KVPAGER_BINARY=build/kvpager KVPAGER_SOURCE_DIR=$PWD KVPAGER_FUZZ_TRIES=20000 \
//     KVPAGER_FUZZ_SECONDS=1800 KVPAGER_FUZZ_SEED=1 build/tests/cli/cli_args_fuzz_test
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <regex>

#include "cli/timed_run.hpp"

using namespace kvpager::testing;

namespace {

uint64_t env_number(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

struct Command {
  std::vector<std::string> path;   // e.g. {"bench", "alloc"}
  std::vector<std::string> flags;  // its flags
  int positionals = 0;             // how many positional arguments it takes
};

std::vector<Command> commands() {
  const std::vector<std::string> bench_xfer = {"--backend",
                                               "--worker_type",
                                               "--initiator_seg_type",
                                               "--target_seg_type",
                                               "--scheme",
                                               "--mode",
                                               "--op_type",
                                               "--check_consistency",
                                               "--total_buffer_size",
                                               "--start_block_size",
                                               "--max_block_size",
                                               "--start_batch_size",
                                               "--max_batch_size",
                                               "--num_iter",
                                               "--warmup_iter",
                                               "--num_threads",
                                               "--num_initiator_dev",
                                               "--num_target_dev",
                                               "--enable_pt",
                                               "--device_list",
                                               "--runtime_type",
                                               "--storage_enable_direct",
                                               "--gds_filepath",
                                               "--enable_vmm",
                                               "--benchmark_group",
                                               "--rank",
                                               "--spawn_local",
                                               "--cuda_ipc",
                                               "--peer_timeout",
                                               "--copy_engine"};
  std::vector<std::string> kvbench = {
      "--model", "--model_config", "--model_configs", "--pp",        "--tp",
      "--isl",   "--osl",          "--num_requests",  "--page_size", "--access_pattern"};
  std::vector<std::string> profile = kvbench;
  profile.insert(profile.end(), bench_xfer.begin(), bench_xfer.end());
  profile.insert(profile.end(), {"--source", "--destination"});
  std::vector<std::string> plan = profile;
  plan.push_back("--format");
  std::vector<std::string> xfer = bench_xfer;
  xfer.push_back("--json");
  const std::vector<std::string> demo = {"--backend",   "--layout",    "--duration", "--bursts",
                                         "--peak-rate", "--idle-rate", "--capacity", "--limit",
                                         "--seed",      "--instances", "--budget",   "--prefix"};
  std::vector<std::string> worker = demo;
  worker.back() = "--index";
  return {
      {{"list"}, {"--json"}, 0},
      {{"watch"}, {"-n", "--interval", "--count", "--json"}, 0},
      {{"top"}, {"-n", "--interval", "--json"}, 0},
      {{"gc"}, {"--json"}, 0},
      {{"delete"}, {"--force"}, 1},
      {{"limit"}, {}, 2},
      {{"limit-percent"}, {}, 2},
      {{"guarantee"}, {}, 2},
      {{"guarantee-percent"}, {}, 2},
      {{"budget"}, {}, 2},
      {{"demo"}, demo, 0},
      {{"demo-worker"}, worker, 0},
      {{"tp-worker"}, {"--rank", "--transport", "--parent-pid"}, 1},
      {{"bench", "alloc"},
       {"--backend", "--device", "--iters", "--cold-iters", "--map-pages", "--num-layers",
        "--kv-heads", "--head-dim", "--block-size", "--json"},
       0},
      {{"bench", "vmm"},
       {"--backend", "--device", "--iters", "--loop-pages", "--loop-iters", "--sweep-mib",
        "--shareable", "--json"},
       0},
      {{"bench", "vmm-probe"},
       {"--backend", "--device", "--samples", "--no-children", "--json", "--child",
        "--child-handles"},
       0},
      {{"bench", "map-parallel"},
       {"--pages-total", "--procs", "--iters", "--num-layers", "--block-size", "--layout",
        "--device-mode", "--backend", "--handle-size", "--no-pool", "--warmup", "--json"},
       0},
      {{"bench", "tp-ipc"},
       {"--tp-size", "--pages-per-iter", "--iters", "--map-impl", "--num-layers", "--async-sched",
        "--block-size", "--layout", "--device-mode", "--backend", "--handle-size", "--warmup",
        "--noop-iters", "--json"},
       0},
      {{"bench", "prepare-batch"},
       {"--batch-sizes", "--seq-lens", "--iterations", "--warmup", "--block-size", "--mode",
        "--output", "--json", "--graph"},
       0},
      {{"bench", "xfer"}, xfer, 0},
      {{"kvbench", "plan"}, plan, 0},
      {{"kvbench", "profile"}, profile, 0},
      {{"kvbench", "kvcache"}, kvbench, 0},
      {{"kvbench", "iosize"}, kvbench, 0},
      {{"bench"}, {}, 0},
      {{"kvbench"}, {}, 0},
      {{}, {"--version", "--help"}, 0},
  };
}

class Generator {
 public:
  Generator(uint64_t seed, std::string prefix, std::string models)
      : rng_(seed), prefix_(std::move(prefix)), models_(std::move(models)) {}

  std::vector<std::string> next(const std::vector<Command>& cmds) {
    const Command& c = cmds[pick(cmds.size())];
    std::vector<std::string> argv = c.path;
    const int pairs = static_cast<int>(pick(6));
    bool hostile = false;
    for (int i = 0; i < pairs; ++i) {
      std::string flag =
          c.flags.empty() || chance(10) ? junk_flag() : c.flags[pick(c.flags.size())];
      argv.push_back(flag);
      if (chance(15)) continue;  // a flag without its value (or a bool flag)
      const bool bad = chance(60);
      hostile = hostile || bad;
      argv.push_back(value_for(flag, bad));
    }
    for (int i = 0; i < c.positionals + (chance(10) ? 1 : 0); ++i) {
      const bool bad = chance(50);
      hostile = hostile || bad;
      argv.push_back(bad ? hostile_value() : plain_value());
    }
    if (!hostile) argv.push_back(chance(50) ? junk_flag() : hostile_value());
    return argv;
  }

 private:
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return static_cast<int>(pick(100)) < percent; }

  std::string junk_flag() {
    static const std::vector<std::string> f = {
        "--", "-", "--no-such-flag", "-x", "---", "--=1", "--help=3", "-n-1", "--json=", "-\n"};
    return f[pick(f.size())];
  }
  std::string hostile_value() {
    static const std::vector<std::string> v = {"-1",
                                               "-5",
                                               "0",
                                               "1e308",
                                               "-1e308",
                                               "nan",
                                               "NaN",
                                               "inf",
                                               "-inf",
                                               "1e-320",
                                               "18446744073709551616",
                                               "18446744073709551615",
                                               "9223372036854775808",
                                               "4000000000000000000",
                                               "4294967296",
                                               "2147483648",
                                               "99999999999999999999999999",
                                               "",
                                               " ",
                                               "0x10",
                                               "1..2",
                                               "1,2,,",
                                               "12%",
                                               "101%",
                                               "-0",
                                               "+5",
                                               "1e7",
                                               "4000000000",
                                               "bad\nline",
                                               "esc\x1b[2Jape",
                                               "tab\tbed",
                                               "\xff\xfe",
                                               "../../etc",
                                               "%s%n%s",
                                               "1EiB",
                                               "16EiB",
                                               "17179869184GiB",
                                               "0.0000001",
                                               "a b c",
                                               "--help"};
    if (chance(5)) return std::string(5000 + pick(5000), 'x');
    return v[pick(v.size())];
  }
  std::string plain_value() {
    static const std::vector<std::string> v = {
        "1",         "2",     "3",     "16",   "100",     "4GiB",   "64MiB", "1M",
        "0.5",       "50%",   "host",  "auto", "cuda",    "demo-a", "host0", "interleaved",
        "per-layer", "json",  "POSIX", "UCX",  "CUDA",    "WRITE",  "READ",  "file",
        "memory",    "block", "layer", "tp",   "pairwise"};
    return v[pick(v.size())];
  }
  std::string value_for(const std::string& flag, bool bad) {
    if (flag == "--prefix") {  // never outside this test's own namespace
      return prefix_ + (bad ? std::string("x\ny") : std::to_string(pick(3)) + "-");
    }
    if (!bad && (flag == "--model")) {
      return chance(50) ? "deepseek-r1" : models_ + "/examples/model_deepseek_r1.yaml";
    }
    if (!bad && (flag == "--model_config" || flag == "--model_configs")) {
      return models_ + "/examples/block-tp1-pp16.yaml";
    }
    if (!bad && flag == "--duration") return "1";
    return bad ? hostile_value() : plain_value();
  }

  std::mt19937_64 rng_;
  std::string prefix_;
  std::string models_;
};

std::string shown(const std::vector<std::string>& argv) {
  std::string s = "kvpager";
  for (const auto& a : argv) {
    s += " '";
    for (unsigned char ch : a.substr(0, 60)) {
      char buf[8];
      if (ch < 0x20 || ch >= 0x7f || ch == '\'') {
        std::snprintf(buf, sizeof buf, "\\x%02x", ch);
        s += buf;
      } else {
        s += static_cast<char>(ch);
      }
    }
    s += a.size() > 60 ? "...'" : "'";
  }
  return s;
}

void remove_prefixed(const std::string& dir, const std::string& prefix) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) == 0) ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

// What is wrong with one run, or "" when nothing is.
std::string judge(const TimedRun& r) {
  if (r.hung) return "hang: still running 5 s after SIGTERM";
  if (!r.exited && !r.interrupted) return "crash: killed by signal " + std::to_string(r.signal);
  if (r.interrupted) {
    // Ran past the limit (a valid, long command): it must have stopped on the SIGTERM.
    if (r.exited && r.code != 0 && r.code != 1 && r.code != 2 && r.code != 128 + SIGTERM) {
      return "wrong: exit status " + std::to_string(r.code) + " after SIGTERM";
    }
    return "";
  }
  if (r.code != 0 && r.code != 1 && r.code != 2) {
    return "wrong: exit status " + std::to_string(r.code);
  }
  const std::string all = r.out + r.err;
  for (const char* bad : {"bad_alloc", "terminate called", "what():", "Sanitizer"}) {
    if (all.find(bad) != std::string::npos) return std::string("wrong: output shows ") + bad;
  }
  static const std::regex long_number("[0-9]{40}");
  if (std::regex_search(r.err, long_number)) return "wrong: a 40-digit number in the error";
  if (r.code == 0) return "";
  const auto lines = lines_of(r.err);
  if (lines.empty()) return "wrong: exit " + std::to_string(r.code) + " without a message";
  if (lines.back().rfind("kvpager: error: ", 0) != 0) {
    return "wrong: the last error line lacks the prefix: " + lines.back().substr(0, 200);
  }
  if (r.code == 2 && lines.size() != 1) {
    return "wrong: a usage error of " + std::to_string(lines.size()) + " lines";
  }
  return "";
}

TEST(CliArgsFuzz, NoCrashNoHangNoMalformedError) {
  if (timed_run_binary().empty()) GTEST_SKIP() << "KVPAGER_BINARY is not set";
  const uint64_t tries = env_number("KVPAGER_FUZZ_TRIES", 400);
  const auto budget = std::chrono::seconds(env_number("KVPAGER_FUZZ_SECONDS", 8));
  const uint64_t seed = env_number("KVPAGER_FUZZ_SEED", 20);
  const char* src = std::getenv("KVPAGER_SOURCE_DIR");
  const std::string models = std::string(src ? src : ".") + "/models";
  const std::string prefix = "kvptest-" + std::to_string(::getpid()) + "-fuzz-";
  const std::filesystem::path work =
      std::filesystem::temp_directory_path() / ("kvpager_fuzz_" + std::to_string(::getpid()));
  std::filesystem::create_directories(work);

  TimedRunOptions o;
  o.limit = std::chrono::milliseconds(env_number("KVPAGER_FUZZ_LIMIT_MS", 3000));
  o.grace = std::chrono::seconds(5);
  o.env = {"KVPAGER_SHM_PREFIX=" + prefix, "TMPDIR=" + work.string(), "KVPAGER_TP_TIMEOUT_MS=2000"};
  o.address_space_bytes = 2ull << 30;
  o.file_size_bytes = 256ull << 20;
  o.cwd = work.string();

  const auto cmds = commands();
  Generator gen(seed, prefix, models);
  std::map<int, uint64_t> codes;
  uint64_t n = 0, crashes = 0, hangs = 0, wrong = 0, interrupted = 0;
  std::vector<std::string> failures;
  const auto start = std::chrono::steady_clock::now();
  for (; n < tries && std::chrono::steady_clock::now() - start < budget; ++n) {
    const auto argv = gen.next(cmds);
    const TimedRun r = timed_run(argv, o);
    remove_prefixed("/dev/shm", prefix);
    std::filesystem::remove_all(work);
    std::filesystem::create_directories(work);
    if (r.interrupted) ++interrupted;
    if (r.exited && !r.interrupted) ++codes[r.code];
    const std::string verdict = judge(r);
    if (verdict.empty()) continue;
    if (verdict.rfind("crash", 0) == 0) ++crashes;
    if (verdict.rfind("hang", 0) == 0) ++hangs;
    if (verdict.rfind("wrong", 0) == 0) ++wrong;
    if (failures.size() < 20)
      failures.push_back(verdict + "\n    " + shown(argv) + "\n    " + r.err.substr(0, 600));
  }
  std::filesystem::remove_all(work);
  std::string code_list;
  for (const auto& [code, count] : codes) {
    code_list += " " + std::to_string(code) + ":" + std::to_string(count);
  }
  std::printf(
      "cli fuzz (seed %llu): %llu tries, %llu crashes, %llu hangs, %llu wrong results; "
      "%llu ran past %lld ms and stopped on SIGTERM; exit statuses%s\n",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(n),
      static_cast<unsigned long long>(crashes), static_cast<unsigned long long>(hangs),
      static_cast<unsigned long long>(wrong), static_cast<unsigned long long>(interrupted),
      static_cast<long long>(o.limit.count()), code_list.c_str());
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GT(n, 0u);
  EXPECT_EQ(crashes + hangs + wrong, 0u);
}

}  // namespace

// kvpager kvbench profile: runs each config's plan — with nixlbench when it is on PATH,
// otherwise with `kvpager bench xfer` (every rank on this host).
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "bench/bench_xfer_local_ranks.hpp"
#include "command_registry.hpp"
#include "kvbench/kvbench_buffer_size.hpp"
#include "kvbench/kvbench_options.hpp"
#include "kvbench/kvbench_plan_output.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {
namespace {

struct ProfileArgs {
  KvbenchInputs inputs;
  BenchArgs bench;
  bool total_buffer_size_given = false;  // --total_buffer_size on the command line
};

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  std::stringstream s(path);
  for (std::string dir; std::getline(s, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0 && !std::filesystem::is_directory(candidate)) {
      return candidate;
    }
  }
  return {};
}

void run_nixlbench(const std::string& binary, const transfer::XferConfig& xfer) {
  std::vector<std::string> argv = transfer::nixlbench_argv(xfer);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::cout.flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork", errno);
  if (pid == 0) {
    ::execv(binary.c_str(), args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid", errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(binary + " failed (status " +
                std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) +
                ")");
  }
}

void run_profile(const ProfileArgs& args) {
  args.bench.xfer.validate_for_run();
  const model::ModelArchitecture arch = load_model(args.inputs);
  std::vector<PlannedConfig> plans;
  for (auto& lc : load_configs(args.inputs, arch)) {
    PlannedConfig p{lc, transfer::plan_transfer(lc.geometry, lc.config, args.bench.xfer,
                                                endpoints_for(args.bench, lc.config))};
    // Every plan must be runnable before the first one runs (a plan of 7.5e12 blocks is
    // refused here instead of growing until the kernel kills the process).
    try {
      p.xfer.validate_for_run();
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("--model_config " + lc.path +
                            ": its transfer plan cannot run: " + e.what());
    }
    plans.push_back(std::move(p));
  }
  const std::string nixlbench = find_on_path("nixlbench");
  for (size_t i = 0; i < plans.size(); ++i) {
    if (i > 0) std::cout << "\n";
    std::cout << plan_header(plans[i]);
    if (!nixlbench.empty()) {
      // nixlbench refuses a batch that does not fit its buffer: size it as `plan` prints it
      // (kvpager bench xfer below allocates the buffer it is given, so it keeps the user's).
      size_buffer_to_plan(plans[i].xfer, args.total_buffer_size_given);
      std::cout << plan_command_text(plans[i].xfer) << std::flush;
      run_nixlbench(nixlbench, plans[i].xfer);
    } else {
      std::cout << "nixlbench not on PATH: running kvpager bench xfer\n" << std::flush;
      run_with_local_ranks(plans[i].xfer, std::cout);
    }
  }
}

void register_profile(CommandGroups& groups) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = groups.kvbench.add_subcommand(
      "profile", "Run the plan (nixlbench if on PATH, else kvpager bench xfer)");
  add_common_args(*cmd, args->inputs);
  add_bench_args(*cmd, args->bench, /*with_endpoints=*/true);
  cmd->callback([args, cmd] {
    args->total_buffer_size_given = cmd->count("--total_buffer_size") > 0;
    run_profile(*args);
  });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_profile);
}  // namespace kvpager::cli

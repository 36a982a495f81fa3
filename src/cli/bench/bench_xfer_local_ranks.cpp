#include "bench/bench_xfer_local_ranks.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "kvpager/bench/transfer/xfer_bench.hpp"
#include "kvpager/bench/transfer/xfer_layout.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {

namespace {

class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw_errno("fork", errno);
    if (pid_ == 0) {
      ::execv("/proc/self/exe", args.data());
      ::_exit(127);
    }
  }
  ~ChildProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Waits for the child; returns its exit status (128 + signal when killed).
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) throw_errno("waitpid", errno);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace

transfer::XferReport run_with_local_ranks(transfer::XferConfig c, std::ostream& table) {
  c.validate_for_run();
  const transfer::XferLayout layout = transfer::make_layout(c);
  const bool multi =
      c.backend == "UCX" || c.backend == "UCX_MO" || (c.backend == "CUDA" && c.cuda_ipc);
  c.spawn_local = false;
  if (!multi || layout.world_size() == 1) return transfer::run_xfer_bench(c, table);
  if (c.benchmark_group == transfer::XferConfig{}.benchmark_group) {
    c.benchmark_group = "local-" + std::to_string(::getpid());
  }
  std::vector<std::unique_ptr<ChildProcess>> children;
  for (uint32_t rank = 1; rank < layout.world_size(); ++rank) {
    std::vector<std::string> argv = transfer::nixlbench_argv(c);
    argv[0] = "xfer";
    argv.insert(argv.begin(), {"kvpager", "bench"});
    for (const std::string& extra :
         {std::string("--benchmark_group"), c.benchmark_group, std::string("--rank"),
          std::to_string(rank), std::string("--peer_timeout"), std::to_string(c.peer_timeout_s)}) {
      argv.push_back(extra);
    }
    if (c.cuda_ipc) argv.push_back("--cuda_ipc");
    children.push_back(std::make_unique<ChildProcess>(std::move(argv)));
  }
  c.rank = 0;
  transfer::XferReport report = transfer::run_xfer_bench(c, table);
  for (size_t i = 0; i < children.size(); ++i) {
    const int rc = children[i]->wait();
    if (rc != 0) {
      throw Error("rank " + std::to_string(i + 1) + " exited with status " + std::to_string(rc));
    }
  }
  return report;
}

}  // namespace kvpager::cli

#include "kvpager/tp/worker_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "kvpager/common/error.hpp"

namespace kvpager::tp {

WorkerProcess::WorkerProcess(RankId rank, const std::string& binary,
                             const std::vector<std::string>& args, const std::vector<int>& fds)
    : rank_(rank), binary_(binary) {
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) throw_errno("fork", errno, "starting tp worker rank " + std::to_string(rank.value));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Move the sources out of the way first (close-on-exec copies), then put them in place.
    int moved[8];
    const size_t n = fds.size() < 8 ? fds.size() : 8;
    for (size_t i = 0; i < n; ++i) {
      moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64);
      if (moved[i] < 0) _exit(126);
    }
    for (size_t i = 0; i < n; ++i) {
      if (dup2(moved[i], kWorkerChannelFd + static_cast<int>(i)) < 0) _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);  // the scheduler died before the prctl
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  pid_ = pid;
}

WorkerProcess::~WorkerProcess() {
  kill_and_reap();
}

bool WorkerProcess::poll_locked() {
  if (reaped_) return true;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
  } else if (r < 0 && errno == ECHILD) {
    reaped_ = true;  // somebody else reaped it; nothing left to wait for
    wait_status_ = -1;
  }
  return reaped_;
}

bool WorkerProcess::exited() {
  std::lock_guard lock(mutex_);
  return poll_locked();
}

bool WorkerProcess::wait_exit(std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (poll_locked()) return true;
    }
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void WorkerProcess::kill_and_reap() {
  std::lock_guard lock(mutex_);
  if (pid_ <= 0 || poll_locked()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  reaped_ = true;
  wait_status_ = r == pid_ ? status : -1;
}

std::string WorkerProcess::exit_description() {
  std::lock_guard lock(mutex_);
  if (!poll_locked()) return "running";
  if (wait_status_ == -1) return "exited (status unknown)";
  if (WIFEXITED(wait_status_)) {
    const int code = WEXITSTATUS(wait_status_);
    std::string s = "exited with status " + std::to_string(code);
    if (code == 127) s += " (could not execute " + binary_ + ")";
    return s;
  }
  if (WIFSIGNALED(wait_status_)) {
    const int sig = WTERMSIG(wait_status_);
    const char* abbrev = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) +
           (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
  }
  return "stopped";
}

}  // namespace kvpager::tp

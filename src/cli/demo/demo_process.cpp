#include "demo/demo_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "demo/stop_signals.hpp"
#include "kvpager/common/error.hpp"

extern char** environ;

namespace kvpager::cli {

namespace {

std::string key_of(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

}  // namespace

DemoProcess::DemoProcess(std::string name, const std::vector<std::string>& args,
                         const std::vector<std::string>& env)
    : name_(std::move(name)) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw_errno("pipe2", errno);
  if (::pipe2(out, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(in[0]);
    ::close(in[1]);
    throw_errno("pipe2", err);
  }
  std::vector<std::string> all;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    bool replaced = false;
    for (const auto& x : env) replaced = replaced || key_of(x) == key_of(entry);
    if (!replaced) all.push_back(entry);
  }
  all.insert(all.end(), env.begin(), env.end());
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : all) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    const int err = errno;
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    throw_errno("fork", err);
  }
  if (pid_ == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the coordinator died before the prctl
    ::execve("/proc/self/exe", argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  in_ = in[1];
  out_ = out[0];
}

DemoProcess::~DemoProcess() {
  if (!reaped_) {
    request_stop();
    finish_stop(Clock::now() + kStopGrace);
  }
  if (in_ >= 0) ::close(in_);
  if (out_ >= 0) ::close(out_);
}

void DemoProcess::send(const std::string& line) {
  const std::string l = line + "\n";
  if (::write(in_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
    for (int i = 0; i < 100 && !exited(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw StateError("demo: model instance " + describe());
  }
}

std::optional<std::string> DemoProcess::read_line(Clock::time_point deadline) {
  for (;;) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (stop_signal() != 0) return std::nullopt;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      throw Timeout("demo: model instance " + name_ + " (pid " + std::to_string(pid_) +
                    ") did not answer in time");
    }
    pollfd p{out_, POLLIN, 0};
    // Wake up now and then to look for a stop signal that came before the poll.
    if (::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(out_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Its stdout closed: it is exiting; give the kernel a moment to report how.
      for (int i = 0; i < 100 && !exited(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      throw StateError("demo: model instance " + describe());
    }
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

bool DemoProcess::exited() {
  if (reaped_) return true;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
  }
  return reaped_;
}

bool DemoProcess::failed() {
  return exited() && (!WIFEXITED(status_) || WEXITSTATUS(status_) != 0);
}

std::string DemoProcess::describe() {
  const std::string who = name_ + " (pid " + std::to_string(pid_) + ")";
  if (!exited()) return who + " is running";
  if (WIFSIGNALED(status_)) return who + " was killed by " + signal_name(WTERMSIG(status_));
  const int code = WEXITSTATUS(status_);
  if (code > 128 && code < 128 + 65) {
    return who + " stopped on " + signal_name(code - 128) + " (exit status " +
           std::to_string(code) + ")";
  }
  return who + " exited with status " + std::to_string(code) +
         (code == 0 ? " before the run was over" : " (its error is above)");
}

int DemoProcess::wait() {
  while (!reaped_) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, 0);
    if (r == pid_) {
      reaped_ = true;
      status_ = st;
    } else if (r < 0 && errno != EINTR) {
      throw_errno("waitpid", errno);
    }
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

void DemoProcess::request_stop() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
  if (!exited()) ::kill(pid_, SIGTERM);
}

bool DemoProcess::finish_stop(Clock::time_point deadline) {
  while (!exited()) {
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
      status_ = st;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void stop_all(std::vector<std::unique_ptr<DemoProcess>>& workers) {
  for (auto& w : workers) w->request_stop();
  const auto deadline = DemoProcess::Clock::now() + DemoProcess::kStopGrace;
  for (auto& w : workers) w->finish_stop(deadline);
}

}  // namespace kvpager::cli

#pragma once
// ChildProcess: a real process for multi-process tests (fork + exec), with its stdin and
// stdout on pipes and extra environment variables. RAII: the destructor SIGKILLs a child that
// is still running and reaps it, so a failing test leaves no process behind.
// run_command(): runs a command to completion and returns its exit status, stdout and stderr.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace kvpager::testing {

class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
               bool pipe_stdin = true) {
    int in[2] = {-1, -1}, out[2], err[2];
    if ((pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0) || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      const std::string key = kv.substr(0, kv.find('='));
      if (!env.count(key)) envs.push_back(kv);
    }
    for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (const auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      if (pipe_stdin) ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    if (pipe_stdin) {
      ::close(in[0]);
      stdin_ = in[1];
    }
    ::close(out[1]);
    ::close(err[1]);
    stdout_ = out[0];
    stderr_ = err[0];
  }
  ~ChildProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    for (int fd : {stdin_, stdout_, stderr_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  void send(const std::string& line) {
    const std::string l = line + "\n";
    if (::write(stdin_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
      throw std::runtime_error("write to child failed");
    }
  }
  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }

  // Next line of stdout, or "" when none came within `deadline` (or at EOF).
  std::string read_line(std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  // Everything left on stdout, until the child closes it.
  std::string read_all() {
    std::string all = std::move(buffer_);
    buffer_.clear();
    char buf[4096];
    ssize_t n;
    while ((n = ::read(stdout_, buf, sizeof buf)) > 0) all.append(buf, static_cast<size_t>(n));
    return all;
  }

  std::string read_stderr() {
    std::string all;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(stderr_, buf, sizeof buf)) > 0) all.append(buf, static_cast<size_t>(n));
    return all;
  }

  void kill(int sig) { ::kill(pid_, sig); }
  // Exit status (or 128 + signal).
  int wait() {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    reaped_ = true;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int stdin_ = -1, stdout_ = -1, stderr_ = -1;
  std::string buffer_;
};

struct CommandResult {
  int status = -1;
  std::string out;
  std::string err;
};

inline CommandResult run_command(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& env) {
  ChildProcess child(argv, env, false);
  CommandResult r;
  r.out = child.read_all();
  r.err = child.read_stderr();
  r.status = child.wait();
  return r;
}

inline std::string kvpager_binary() {
  const char* b = std::getenv("KVPAGER_BINARY");
  return b ? b : "";
}

}  // namespace kvpager::testing

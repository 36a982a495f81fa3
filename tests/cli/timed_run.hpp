#pragma once
// timed_run(): runs the kvpager binary (KVPAGER_BINARY) with an argument vector, stdin from
// /dev/null, stdout and stderr captured, in a process group of its own, under a time limit.
// A run past the limit gets SIGTERM (to the group); one still there `grace` later is a hang
// and gets SIGKILL. The result says which of these happened, so a test can tell a slow but
// interruptible command from a hung one and a signal death (crash) from an exit.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kvpager::testing {

struct TimedRun {
  bool exited = false;       // exited on its own (status in `code`)
  int code = -1;             // exit status when `exited`
  int signal = 0;            // the signal that ended it, when not `exited`
  bool interrupted = false;  // ran past the limit and was sent SIGTERM
  bool hung = false;         // still there `grace` after the SIGTERM: SIGKILLed
  std::string out, err;
  std::chrono::milliseconds took{0};
};

struct TimedRunOptions {
  std::chrono::milliseconds limit{5000};
  std::chrono::milliseconds grace{5000};
  std::vector<std::string> env;  // "NAME=value", added to (or replacing in) the environment
  // RLIMIT_AS for the child (0: unchanged). Under AddressSanitizer (ASAN_OPTIONS set), which
  // needs a huge address space, ASan's own cap on one allocation takes its place.
  uint64_t address_space_bytes = 0;
  uint64_t file_size_bytes = 0;  // RLIMIT_FSIZE (0: unchanged); SIGXFSZ is ignored
  std::string cwd;               // working folder of the child (empty: unchanged)
};

inline std::string timed_run_binary() {
  const char* b = std::getenv("KVPAGER_BINARY");
  return b ? b : "";
}

inline std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline TimedRun timed_run(const std::vector<std::string>& args, const TimedRunOptions& o = {}) {
  char out_tpl[] = "/tmp/kvpager_fuzz_out_XXXXXX";
  char err_tpl[] = "/tmp/kvpager_fuzz_err_XXXXXX";
  const int out_fd = ::mkstemp(out_tpl);
  const int err_fd = ::mkstemp(err_tpl);
  std::vector<std::string> all{timed_run_binary()};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('=') + 1);
    bool replaced = false;
    for (const auto& x : o.env) replaced = replaced || x.compare(0, key.size(), key) == 0;
    if (!replaced) env_strings.push_back(kv);
  }
  env_strings.insert(env_strings.end(), o.env.begin(), o.env.end());
  const char* asan = std::getenv("ASAN_OPTIONS");
  const bool sanitized = asan != nullptr;
  if (sanitized && o.address_space_bytes) {
    for (auto& e : env_strings) {
      if (e.rfind("ASAN_OPTIONS=", 0) == 0) {
        e += ":allocator_may_return_null=1:max_allocation_size_mb=" +
             std::to_string(o.address_space_bytes >> 20);
      }
    }
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) ::_exit(126);
    if (o.address_space_bytes && !sanitized) {
      rlimit r{o.address_space_bytes, o.address_space_bytes};
      ::setrlimit(RLIMIT_AS, &r);
    }
    if (o.file_size_bytes) {
      ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
      rlimit r{o.file_size_bytes, o.file_size_bytes};
      ::setrlimit(RLIMIT_FSIZE, &r);
    }
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // both sides, whichever runs first
  TimedRun r;
  int status = 0;
  auto wait_until = [&](std::chrono::steady_clock::time_point end) {
    for (;;) {
      const pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) return true;
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };
  if (!wait_until(t0 + o.limit)) {
    r.interrupted = true;
    ::kill(-pid, SIGTERM);
    if (!wait_until(std::chrono::steady_clock::now() + o.grace)) {
      r.hung = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  }
  // Whatever the child left in its group (workers of a killed coordinator) goes too.
  ::kill(-pid, SIGKILL);
  r.took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  r.exited = WIFEXITED(status);
  r.code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  ::close(out_fd);
  ::close(err_fd);
  r.out = read_whole(out_tpl);
  r.err = read_whole(err_tpl);
  ::unlink(out_tpl);
  ::unlink(err_tpl);
  return r;
}

// The lines of `text` (a trailing newline ends the last one; it does not start another).
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) out.push_back(line);
  return out;
}

}  // namespace kvpager::testing

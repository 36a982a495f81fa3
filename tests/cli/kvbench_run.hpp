#pragma once
// Runs the kvpager binary (KVPAGER_BINARY, set by CTest) as a child process and captures its
// exit status, stdout and stderr. For the kvbench CLI tests.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvpager::testing {

struct RunResult {
  int rc = -1;
  std::string out;
  std::string err;
};

inline std::string kvpager_binary() {
  const char* b = std::getenv("KVPAGER_BINARY");
  return b ? b : "kvpager";
}

inline std::string source_dir_path() {
  const char* d = std::getenv("KVPAGER_SOURCE_DIR");
  return d ? d : ".";
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `kvpager args...` in `cwd` (empty: the current folder), with extra environment `env`
// ("NAME=value").
inline RunResult run_kvpager(const std::vector<std::string>& args, const std::string& cwd = "",
                             const std::vector<std::string>& env = {}) {
  char out_tpl[] = "/tmp/kvpager_out_XXXXXX";
  char err_tpl[] = "/tmp/kvpager_err_XXXXXX";
  const int out_fd = ::mkstemp(out_tpl);
  const int err_fd = ::mkstemp(err_tpl);
  RunResult r;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<std::string> all{kvpager_binary()};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  ::close(out_fd);
  ::close(err_fd);
  r.out = slurp(out_tpl);
  r.err = slurp(err_tpl);
  ::unlink(out_tpl);
  ::unlink(err_tpl);
  return r;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream s(text);
  for (std::string l; std::getline(s, l);) lines.push_back(l);
  return lines;
}

}  // namespace kvpager::testing

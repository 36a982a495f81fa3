#include "kvpager/limits/process_identity.hpp"

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace kvpager::limits {

namespace {

// Reads the state letter (field 3) and start time (field 22) of /proc/<pid>/stat.
bool read_stat(pid_t pid, char* state, uint64_t* start_time) {
  if (pid <= 0) return false;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  ++p;
  while (*p == ' ') ++p;
  *state = *p;
  // Field 3 is the state; starttime is field 22.
  for (int field = 3; field < 22; ++field) {
    while (*p && *p != ' ') ++p;
    while (*p == ' ') ++p;
    if (!*p) return false;
  }
  *start_time = std::strtoull(p, nullptr, 10);
  return true;
}

}  // namespace

uint64_t process_start_time(pid_t pid) {
  char state = 0;
  uint64_t start = 0;
  return read_stat(pid, &state, &start) ? start : 0;
}

ProcessIdentity current_process() {
  const pid_t pid = ::getpid();
  return {pid, process_start_time(pid)};
}

bool is_alive(const ProcessIdentity& who) {
  if (who.pid <= 0) return false;
  if (::kill(who.pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  uint64_t start = 0;
  if (!read_stat(who.pid, &state, &start)) return ::kill(who.pid, 0) == 0 || errno != ESRCH;
  if (state == 'Z' || state == 'X') return false;  // killed, not yet reaped: holds nothing
  return who.start_time == 0 || start == who.start_time;
}

char process_state(pid_t pid) {
  char state = 0;
  uint64_t start = 0;
  return read_stat(pid, &state, &start) ? state : 0;
}

uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace kvpager::limits

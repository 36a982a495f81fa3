#pragma once
// DemoProcess: one `kvpager demo-worker` process of `kvpager demo`, with its stdin and stdout
// on pipes (demo_worker.cpp has the line protocol).
//
// Promises:
// - The worker sees exactly the environment the coordinator means: an inherited variable that
//   `env` sets (KVPAGER_SHM_PREFIX, ...) is replaced, never left in front of the new value.
// - The worker dies with the coordinator: PR_SET_PDEATHSIG(SIGTERM), and a coordinator that
//   died before the prctl took effect is noticed (parent-pid check) before exec.
// - Every failure names the instance, its pid and how it ended ("was killed by SIGKILL",
//   "exited with status 1"), as StateError.
// - RAII: a worker still running when this goes away is stopped cleanly (stdin closed,
//   SIGTERM: it unregisters), and SIGKILLed only if it is still there after `kStopGrace`.
//   stop_all() does that for many at once, in parallel.
// Thread safety: one thread per object.
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvpager::cli {

class DemoProcess {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kStopGrace{5};

  // `name`: the instance's name, for messages. `env`: "NAME=value" entries.
  DemoProcess(std::string name, const std::vector<std::string>& args,
              const std::vector<std::string>& env);
  ~DemoProcess();
  DemoProcess(const DemoProcess&) = delete;
  DemoProcess& operator=(const DemoProcess&) = delete;

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  void send(const std::string& line);
  // The next stdout line, waiting until `deadline`. StateError when the worker exits first,
  // Timeout at the deadline; returns std::nullopt as soon as a stop signal arrived.
  std::optional<std::string> read_line(Clock::time_point deadline);

  // Reaps the worker if it has exited (never blocks); true once it has.
  bool exited();
  // exited(), by a signal or with a non-zero status.
  bool failed();
  // "demo-b (pid 123) was killed by SIGKILL" / "... exited with status 1"; "... is running".
  std::string describe();
  // Its exit status (128 + signal when killed); waits for it.
  int wait();

  // Asks it to stop (closes stdin, SIGTERM) without waiting.
  void request_stop();
  // Waits until it exited or `deadline` passed; SIGKILLs and reaps it then. True when it
  // exited on its own.
  bool finish_stop(Clock::time_point deadline);

 private:
  std::string name_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  int in_ = -1, out_ = -1;
  std::string buffer_;
};

// Stops every worker still running: request_stop() on all, then finish_stop() with one
// shared deadline of DemoProcess::kStopGrace.
void stop_all(std::vector<std::unique_ptr<DemoProcess>>& workers);

}  // namespace kvpager::cli

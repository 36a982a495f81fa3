#pragma once
// Error types thrown at kvpager's API boundary.
//
// Every failure is a subclass of kvpager::Error carrying an actionable message. Callers can
// catch OutOfMemory to trim, wait or evict; InvalidArgument is a caller bug (bad size, unknown
// id, double free); DriverError carries the failing driver/system call and its result name.
// The CLI maps InvalidArgument to exit code 2 and every other Error to exit code 1.
#include <stdexcept>
#include <string>

namespace kvpager {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from the caller: the operation changed nothing.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// Physical memory, a limit or a budget is exhausted: the operation changed nothing.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// A wait ran past its deadline.
class Timeout : public Error {
 public:
  using Error::Error;
};

// An object is in a state that forbids the call (e.g. a background thread recorded a broken
// invariant, or a peer process died).
class StateError : public Error {
 public:
  using Error::Error;
};

// A driver or system call failed. `call()` names it, `result()` is the CUresult name or errno
// name.
class DriverError : public Error {
 public:
  DriverError(std::string call, std::string result, const std::string& context = {});
  const std::string& call() const noexcept { return call_; }
  const std::string& result() const noexcept { return result_; }

 private:
  std::string call_;
  std::string result_;
};

// Throws DriverError for a failed POSIX call, naming errno.
[[noreturn]] void throw_errno(const std::string& call, int err, const std::string& context = {});

}  // namespace kvpager

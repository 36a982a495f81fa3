#pragma once
// Wall-clock timing for host-synchronous operations (driver VMM calls, allocator calls).
#include <chrono>

namespace kvpager::cli {

inline double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Runs fn() and returns its duration in microseconds.
template <class Fn>
double time_us(Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace kvpager::cli

#pragma once
// Waits for a condition that a background thread makes true. The deadline only bounds a
// hung test; the assertion is about the condition, never about time.
#include <chrono>
#include <thread>

namespace kvpager::testing {

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace kvpager::testing

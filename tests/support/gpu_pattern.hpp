#pragma once
// Test helpers that touch device memory through real kernels (built only with nvcc).
#include <cstddef>
#include <cstdint>

namespace kvpager::testing {

// Writes word i of [ptr, ptr+bytes) as hash(seed, i) with a kernel; synchronises.
// Returns false (and a message in `error`) if the launch or the sync failed.
bool gpu_fill_pattern(uintptr_t ptr, size_t bytes, uint32_t seed, const char** error);

// Counts words that differ from hash(seed, i); -1 on a CUDA error.
long long gpu_count_mismatches(uintptr_t ptr, size_t bytes, uint32_t seed);

// Counts non-zero words; -1 on a CUDA error.
long long gpu_count_nonzero(uintptr_t ptr, size_t bytes);

// Host version of the pattern, for host-backend tests.
inline uint32_t pattern_word(uint32_t seed, uint64_t i) {
  uint64_t x = (static_cast<uint64_t>(seed) << 32) ^ (i * 0x9E3779B97F4A7C15ull);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<uint32_t>(x) | 1u;  // never zero
}

}  // namespace kvpager::testing

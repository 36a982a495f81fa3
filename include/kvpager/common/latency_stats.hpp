#pragma once
// Summary statistics of a sample of latencies, as every benchmark prints them.
#include <cstddef>
#include <vector>

namespace kvpager {

struct LatencySummary {
  size_t count = 0;
  double mean = 0;
  double min = 0;
  double p50 = 0;
  double p95 = 0;
  double p99 = 0;
  double max = 0;
};

// Summarises samples (any unit; the result is in the same unit). Nearest-rank percentiles.
// An empty sample gives an all-zero summary.
LatencySummary summarize(std::vector<double> samples);

}  // namespace kvpager

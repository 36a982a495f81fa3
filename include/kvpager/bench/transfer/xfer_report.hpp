#pragma once
// Results of a transfer benchmark: one row per (block size, batch size) of the sweep, printed
// with nixlbench's columns, and as JSON.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace kvpager::transfer {

struct XferRow {
  uint64_t block_size = 0;
  uint64_t batch_size = 0;
  uint64_t iterations = 0;  // timed iterations (each moves the whole batch once per flow)
  uint64_t bytes = 0;       // moved during the timed iterations, all flows of all initiators
  double seconds = 0;       // wall time of the timed iterations (slowest initiator)
  uint64_t mismatches = 0;  // bytes that failed --check_consistency (0 when not checked)
  bool checked = false;

  double avg_latency_us() const;  // mean time of one iteration (one batch), microseconds
  double mib_per_s() const;
  double gib_per_s() const;
  double gb_per_s() const;
};

struct XferReport {
  std::string backend;
  std::string description;  // what moved where ("UCX put DRAM->DRAM, 2 ranks via etcd ...")
  std::vector<XferRow> rows;
};

// nixlbench's table: "Block Size (B)  Batch Size  Avg Lat. (us)  B/W (MiB/Sec)  B/W (GiB/Sec)
// B/W (GB/Sec)" (widths 20, 15, ...), a line of 80 dashes, one line per row.
void print_table_header(std::ostream& out);
void print_table_row(std::ostream& out, const XferRow& row);
std::string report_json(const XferReport& report);

}  // namespace kvpager::transfer

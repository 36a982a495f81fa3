#include "kvpager/bench/transfer/xfer_report.hpp"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <ostream>
#include <sstream>

namespace kvpager::transfer {

double XferRow::avg_latency_us() const {
  return iterations ? seconds * 1e6 / static_cast<double>(iterations) : 0;
}
double XferRow::mib_per_s() const {
  return seconds > 0 ? bytes / seconds / (1 << 20) : 0;
}
double XferRow::gib_per_s() const {
  return seconds > 0 ? bytes / seconds / (1 << 30) : 0;
}
double XferRow::gb_per_s() const {
  return seconds > 0 ? bytes / seconds / 1e9 : 0;
}

void print_table_header(std::ostream& out) {
  out << std::left << std::setw(20) << "Block Size (B)" << std::setw(15) << "Batch Size"
      << std::setw(15) << "Avg Lat. (us)" << std::setw(15) << "B/W (MiB/Sec)" << std::setw(15)
      << "B/W (GiB/Sec)" << std::setw(15) << "B/W (GB/Sec)"
      << "\n"
      << std::string(80, '-') << "\n";
}

void print_table_row(std::ostream& out, const XferRow& r) {
  auto fixed = [](double v, int digits) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(digits) << v;
    return s.str();
  };
  out << std::left << std::setw(20) << r.block_size << std::setw(15) << r.batch_size
      << std::setw(15) << fixed(r.avg_latency_us(), 3) << std::setw(15) << fixed(r.mib_per_s(), 3)
      << std::setw(15) << fixed(r.gib_per_s(), 6) << std::setw(15) << fixed(r.gb_per_s(), 6)
      << "\n";
  out.flush();
}

std::string report_json(const XferReport& report) {
  nlohmann::ordered_json j;
  j["backend"] = report.backend;
  j["description"] = report.description;
  j["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : report.rows) {
    nlohmann::ordered_json o;
    o["block_size"] = r.block_size;
    o["batch_size"] = r.batch_size;
    o["iterations"] = r.iterations;
    o["bytes"] = r.bytes;
    o["seconds"] = r.seconds;
    o["avg_latency_us"] = r.avg_latency_us();
    o["bw_mib_per_s"] = r.mib_per_s();
    o["bw_gib_per_s"] = r.gib_per_s();
    o["bw_gb_per_s"] = r.gb_per_s();
    if (r.checked) o["mismatched_bytes"] = r.mismatches;
    j["rows"].push_back(std::move(o));
  }
  return j.dump(2) + "\n";
}

}  // namespace kvpager::transfer

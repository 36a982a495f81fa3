#pragma once
// The `kvpager demo` workload, shared by the coordinator (demo.cpp) and the model-instance
// processes (demo_worker.cpp): its options, the instance names, and the bursty schedule that
// moves load from one instance to the next.
//
// Schedule: the first 80 % of the run is cut into max(bursts, instances) slots; slot k belongs
// to instance k % instances, whose arrival rate rises to peak_rate and back (sin^2) while the
// others receive idle_rate. The last 20 % has no arrivals: the running requests drain.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kvpager/kv/kv_geometry.hpp"

namespace kvpager::cli {

struct DemoConfig {
  std::string backend = "auto";
  std::string layout = "interleaved";
  double duration_s = 12;
  double tick_ms = 50;
  int bursts = 3;
  double peak_rate = 16;  // requests per second at a burst's peak
  double idle_rate = 1;
  std::string capacity = "4GiB";  // virtual KV capacity of each instance
  std::string limit;              // per-instance limit (empty: none; the budget still applies)
  unsigned seed = 1;
  int instances = 3;                     // model processes sharing the device
  std::string budget = "3GiB";           // device budget: size, fraction or percentage
  std::string prefix = "kvpager-demo-";  // registry namespace of the demo
};

// Bounds the coordinator checks before it starts anything: a request costs memory while it
// waits, so the rate bounds what a worker may queue (rate x duration requests).
inline constexpr double kDemoMaxRate = 1000;                     // requests/s
inline constexpr uint64_t kDemoMaxCapacity = uint64_t{1} << 40;  // 1 TiB of virtual KV space

// Each instance's KV shape: Llama-3.1-8B, bf16, 16-token blocks (2 MiB per block).
inline kv::KvGeometry demo_geometry() {
  return {32, 8, 128, 2, 16, kv::KvKind::kKeyValue};
}

// InvalidArgument naming the flag for an option out of its range: --instances 1 to 4, rates
// finite and at most kDemoMaxRate (peak above 0), a known backend and layout, --capacity from
// one block to kDemoMaxCapacity, and sizes / budget that parse.
void validate_demo_config(const DemoConfig& config);

inline std::string demo_instance_name(int index) {
  return std::string("demo-") + static_cast<char>('a' + index);
}

inline int demo_slots(const DemoConfig& c) {
  return std::max(c.bursts, c.instances);
}
inline double demo_active_s(const DemoConfig& c) {
  return c.duration_s * 0.8;
}

// The slot running at time t (seconds from the start), or -1 during the drain.
inline int demo_slot(const DemoConfig& c, double t) {
  if (t < 0 || t >= demo_active_s(c)) return -1;
  return std::min(demo_slots(c) - 1, static_cast<int>(t / demo_active_s(c) * demo_slots(c)));
}

inline int demo_busy_instance(const DemoConfig& c, double t) {
  const int slot = demo_slot(c, t);
  return slot < 0 ? -1 : slot % c.instances;
}

// Arrival rate (requests/s) of `instance` at time t.
inline double demo_rate(const DemoConfig& c, int instance, double t) {
  const int slot = demo_slot(c, t);
  if (slot < 0) return 0;
  if (slot % c.instances != instance) return c.idle_rate;
  const double slot_s = demo_active_s(c) / demo_slots(c);
  const double phase = (t - slot * slot_s) / slot_s;
  const double s = std::sin(phase * M_PI);
  return c.idle_rate + (c.peak_rate - c.idle_rate) * s * s;
}

}  // namespace kvpager::cli

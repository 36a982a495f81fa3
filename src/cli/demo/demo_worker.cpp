// kvpager demo-worker (hidden): one model instance of `kvpager demo`, a process of its own.
// It registers in the demo's registry namespace (KVPAGER_SHM_PREFIX, set by the coordinator),
// runs an elastic KvCache following its registry entry, and serves its share of the bursty
// request stream (demo_workload.hpp).
// It stops early, cleanly (unregistering), on SIGTERM, SIGINT or SIGHUP — the coordinator sends
// SIGTERM to stop it, and PR_SET_PDEATHSIG sends it when the coordinator dies — or when its
// parent is no longer the coordinator; it then exits with 128 + signal without a summary.
//
// Protocol with the coordinator, one line each on stdout / stdin:
//   -> "ready DEVICE TOTAL_BYTES DESCRIPTION"   after the cache is up
//   <- "go START_NS"                            steady-clock start shared by all instances
//   -> "summary {json}"                         after the run
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "demo/demo_teardown.hpp"
#include "demo/demo_workload.hpp"
#include "demo/stop_signals.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_cache.hpp"
#include "kvpager/limits/instance_registration.hpp"

namespace kvpager::cli {
namespace {

struct Request {
  std::vector<BlockId> blocks;
  uint32_t prompt = 0;
  uint32_t output = 0;
  uint32_t tokens = 0;
  uint32_t remaining_output = 0;
};

struct WorkerOptions {
  DemoConfig demo;
  int index = 0;
};

// Ends the worker early: its cache and registration go on the way out (RAII).
[[noreturn]] void stop_early(pid_t coordinator) {
  if (stop_signal() != 0) throw ExitStatus{128 + stop_signal()};
  std::fprintf(stderr, "kvpager: error: demo-worker: the coordinator (pid %d) is gone\n",
               static_cast<int>(coordinator));
  throw ExitStatus{kExitFailure};
}

void run_worker(const WorkerOptions& o) {
  const DemoConfig& cfg = o.demo;
  validate_demo_config(cfg);
  if (o.index >= cfg.instances) {
    throw InvalidArgument("demo-worker: --index " + std::to_string(o.index) +
                          " must be below --instances " + std::to_string(cfg.instances));
  }
  const StopSignals stop_signals;
  const pid_t coordinator = ::getppid();
  auto must_stop = [coordinator] { return stop_signal() != 0 || ::getppid() != coordinator; };
  vmm::BackendConfig bc = vmm::backend_config_from_env();
  bc.choice = vmm::parse_backend_choice(cfg.backend);
  auto backend = vmm::make_backend(bc);
  const bool host = backend->kind() == vmm::BackendKind::kHost;
  const std::string device = (host ? "host" : "cuda") + std::to_string(backend->device());

  limits::InstanceSpec spec;
  spec.name = demo_instance_name(o.index);
  spec.model = "llama-3.1-8b (bf16)";
  spec.device = device;
  spec.device_total_bytes = backend->memory_info().total_bytes;
  if (!cfg.limit.empty()) spec.limit_bytes = parse_size(cfg.limit);
  // Declared before the registration: sweeps after it is gone, if the coordinator is too.
  const DemoTeardown orphan_sweep(limits::registry_config_from_env(),
                                  [coordinator] { return ::getppid() != coordinator; });
  auto link = limits::InstanceRegistration::create(limits::registry_config_from_env(), spec);

  kv::KvCacheConfig kc;
  kc.geometry = demo_geometry();
  kc.layout = kv::parse_layout(cfg.layout);
  kc.num_blocks = parse_size(cfg.capacity) / kc.geometry.block_bytes_all_layers();
  kc.reserve_pages = 1;
  kc.max_idle_pages = 2;  // idle memory goes back to the device quickly
  kc.pool_min_ready = 1;
  kc.pool_max_ready = 2;
  kc = kv::kv_cache_config_from_env(kc);
  kc.registry_link = link;
  kv::KvCache cache(backend, kc);
  const kv::TensorView layer0 = cache.tensor(0, 0);

  std::printf("ready %s %llu %s\n", device.c_str(),
              static_cast<unsigned long long>(spec.device_total_bytes),
              backend->describe().c_str());
  std::fflush(stdout);
  std::string word;
  int64_t start_ns = 0;
  if (!(std::cin >> word >> start_ns) || word != "go") {
    if (must_stop()) stop_early(coordinator);
    return;  // the coordinator gave up
  }
  const auto start = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(start_ns));
  std::this_thread::sleep_until(start);
  if (must_stop()) stop_early(coordinator);

  std::mt19937 rng(cfg.seed * 7919u + static_cast<unsigned>(o.index));
  std::uniform_int_distribution<uint32_t> prompt_len(256, 2048), output_len(64, 512);
  const uint32_t bs = kc.geometry.block_size;
  const uint32_t tokens_per_tick = 16;  // decode steps per tick per request
  std::vector<Request> active;
  std::deque<Request> waiting;
  std::vector<double> alloc_us;
  alloc_us.reserve(1 << 16);
  uint64_t finished = 0, admitted = 0, deferred = 0, stalled = 0, preempted = 0, peak_mapped = 0;
  double arrivals = 0;

  auto try_alloc = [&](size_t n, std::vector<BlockId>& into) {
    const size_t old = into.size();
    into.resize(old + n);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      cache.alloc(n, std::span<BlockId>(into.data() + old, n));
    } catch (const OutOfMemory&) {
      into.resize(old);
      return false;
    }
    alloc_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (host) {  // touch the blocks: the memory is real
      for (size_t i = old; i < into.size(); ++i) {
        std::memset(
            reinterpret_cast<void*>(layer0.base + into[i].value * layer0.block_stride_bytes), 0x11,
            64);
      }
    }
    return true;
  };

  const int ticks = static_cast<int>(cfg.duration_s * 1000 / cfg.tick_ms);
  for (int tick = 0; tick < ticks; ++tick) {
    if (must_stop()) stop_early(coordinator);
    const double t = tick * cfg.tick_ms / 1000.0;
    arrivals += demo_rate(cfg, o.index, t) * cfg.tick_ms / 1000.0;
    while (arrivals >= 1) {
      arrivals -= 1;
      Request r;
      r.prompt = r.tokens = prompt_len(rng);
      r.output = r.remaining_output = output_len(rng);
      waiting.push_back(std::move(r));
    }
    // Admit waiting requests (prefill) while memory allows; the rest wait for the next tick.
    while (!waiting.empty()) {
      Request& r = waiting.front();
      if (!try_alloc((r.tokens + bs - 1) / bs, r.blocks)) {
        ++deferred;
        break;
      }
      active.push_back(std::move(r));
      waiting.pop_front();
      ++admitted;
    }
    // Decode: every active request produces tokens; a new block at each boundary.
    for (size_t i = 0; i < active.size();) {
      Request& r = active[i];
      const uint32_t step = std::min(tokens_per_tick, r.remaining_output);
      const uint32_t need = (r.tokens + step + bs - 1) / bs;
      if (need > r.blocks.size() && !try_alloc(need - r.blocks.size(), r.blocks)) {
        if (active.size() > 1) {
          // Memory full: preempt the newest other request (it is recomputed later, as serving
          // engines do) so the older ones can finish and give their memory back.
          const size_t victim = i == active.size() - 1 ? active.size() - 2 : active.size() - 1;
          Request v = std::move(active[victim]);
          cache.free(v.blocks);
          v.blocks.clear();
          v.tokens = v.prompt;
          v.remaining_output = v.output;
          waiting.push_front(std::move(v));
          active.erase(active.begin() + static_cast<long>(victim));
          ++preempted;
          if (victim < i) --i;
          continue;  // retry request i
        }
        ++stalled;  // alone and still refused: wait for the next tick
        ++i;
        continue;
      }
      r.tokens += step;
      r.remaining_output -= step;
      if (r.remaining_output == 0) {
        cache.free(r.blocks);
        ++finished;
        active[i] = std::move(active.back());
        active.pop_back();
      } else {
        ++i;
      }
    }
    peak_mapped = std::max(peak_mapped, cache.mapped_bytes());
    std::this_thread::sleep_until(
        start + std::chrono::microseconds(static_cast<int64_t>((tick + 1) * cfg.tick_ms * 1000)));
  }
  const size_t unserved = active.size() + waiting.size();
  for (auto& r : active) cache.free(r.blocks);
  // Idle: the mapper unmaps free pages beyond max_idle_pages (give it up to a second).
  for (int i = 0; i < 100 && cache.stats().free_pages > kc.max_idle_pages && !must_stop(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (must_stop()) stop_early(coordinator);
  const uint64_t idle_mapped = cache.mapped_bytes();
  cache.trim();
  const kv::KvCacheStats s = cache.stats();
  const LatencySummary a = summarize(alloc_us);
  const nlohmann::json summary = {{"name", spec.name},
                                  {"admitted", admitted},
                                  {"finished", finished},
                                  {"unserved", unserved},
                                  {"deferred", deferred},
                                  {"stalled", stalled},
                                  {"preempted", preempted},
                                  {"peak_mapped", peak_mapped},
                                  {"alloc_p50_us", a.p50},
                                  {"alloc_p99_us", a.p99},
                                  {"allocs", s.alloc_calls},
                                  {"cold_allocs", s.cold_allocs},
                                  {"pages_mapped", s.pages_mapped_total},
                                  {"pages_unmapped", s.pages_unmapped_total},
                                  {"page_bytes", s.page_bytes},
                                  {"idle_mapped", idle_mapped},
                                  {"mapped_after_trim", s.mapped_bytes}};
  std::printf("summary %s\n", summary.dump().c_str());
  std::fflush(stdout);
}

void register_worker(CommandGroups& groups) {
  auto o = std::make_shared<WorkerOptions>();
  CLI::App* cmd = groups.root.add_subcommand("demo-worker", "One model instance of kvpager demo");
  cmd->group("");  // hidden: started by `kvpager demo`
  cmd->add_option("--index", o->index)->required()->check(integer_in(0, 3));
  cmd->add_option("--instances", o->demo.instances)->required();
  cmd->add_option("--backend", o->demo.backend);
  cmd->add_option("--layout", o->demo.layout);
  cmd->add_option("--duration", o->demo.duration_s);
  cmd->add_option("--bursts", o->demo.bursts);
  cmd->add_option("--peak-rate", o->demo.peak_rate);
  cmd->add_option("--idle-rate", o->demo.idle_rate);
  cmd->add_option("--capacity", o->demo.capacity);
  cmd->add_option("--limit", o->demo.limit);
  cmd->add_option("--seed", o->demo.seed);
  cmd->callback([o] { run_worker(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_worker);
}  // namespace kvpager::cli

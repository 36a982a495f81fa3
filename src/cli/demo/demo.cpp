// kvpager demo: several model instances — separate processes, each with its own elastic KV
// cache — share one device under one budget while a bursty synthetic request stream moves the
// load from one to the next (demo_workload.hpp). Memory flows to the busy instance and back:
// idle instances unmap what they do not use, and give back even their reserve when another
// instance is refused by the budget. Live lines while it runs, a summary at the end.
// Runs on the CUDA backend when a GPU is present, on the host backend otherwise.
// The demo keeps its own registry namespace (--prefix): watch it with
//   KVPAGER_SHM_PREFIX=kvpager-demo- kvpager top
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "admin/registry_view.hpp"
#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "demo/demo_process.hpp"
#include "demo/demo_teardown.hpp"
#include "demo/demo_workload.hpp"
#include "demo/stop_signals.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_geometry.hpp"
#include "kvpager/limits/device_budget.hpp"
#include "kvpager/limits/registry.hpp"
#include "kvpager/vmm/backend.hpp"

namespace kvpager::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::string bar(uint64_t value, uint64_t scale, int width) {
  const double f =
      scale ? std::min(1.0, static_cast<double>(value) / static_cast<double>(scale)) : 0;
  const int n = static_cast<int>(std::lround(f * width));
  return "[" + std::string(n, '#') + std::string(width - n, '.') + "]";
}

// Per-slot statistics of what each instance held, sampled by the coordinator.
struct SlotStats {
  std::vector<double> mapped_sum;  // per instance, summed over samples
  std::vector<uint64_t> mapped_max;
  uint64_t samples = 0;
};

// A stop signal arrived: the workers stop (RAII, on the way out) and the demo exits with
// 128 + signal.
[[noreturn]] void interrupted() {
  const int sig = stop_signal();
  std::fprintf(stderr, "kvpager: demo: %s: stopping the model instances\n",
               signal_name(sig).c_str());
  throw ExitStatus{128 + sig};
}

// The first worker that failed (killed, or a non-zero exit), named with how it ended, as
// StateError. One that exited 0 has printed its summary (read after the run).
void check_workers(std::vector<std::unique_ptr<DemoProcess>>& workers) {
  for (auto& w : workers) {
    if (w->failed()) throw StateError("demo: model instance " + w->describe());
  }
}

std::string read_from(DemoProcess& w, Clock::time_point deadline) {
  std::optional<std::string> line = w.read_line(deadline);
  if (!line) interrupted();
  return *line;
}

void run_demo(const DemoConfig& cfg) {
  validate_demo_config(cfg);
  limits::RegistryConfig rc = limits::registry_config_from_env();
  rc.prefix = cfg.prefix;
  limits::validate_registry_config(rc);
  const StopSignals stop_signals;
  limits::Registry registry(rc);
  registry.gc();  // leftovers of an interrupted earlier demo
  const DemoTeardown teardown(rc);

  std::vector<std::unique_ptr<DemoProcess>> workers;
  struct StopAll {
    std::vector<std::unique_ptr<DemoProcess>>& w;
    ~StopAll() { stop_all(w); }
  } stop_workers{workers};
  for (int i = 0; i < cfg.instances; ++i) {
    char num[64];
    std::vector<std::string> args = {"kvpager",     "demo-worker",
                                     "--index",     std::to_string(i),
                                     "--instances", std::to_string(cfg.instances),
                                     "--backend",   cfg.backend,
                                     "--layout",    cfg.layout};
    std::snprintf(num, sizeof num, "%.17g", cfg.duration_s);
    args.insert(args.end(), {"--duration", num, "--bursts", std::to_string(cfg.bursts)});
    std::snprintf(num, sizeof num, "%.17g", cfg.peak_rate);
    args.insert(args.end(), {"--peak-rate", num});
    std::snprintf(num, sizeof num, "%.17g", cfg.idle_rate);
    args.insert(args.end(), {"--idle-rate", num, "--capacity", cfg.capacity, "--seed",
                             std::to_string(cfg.seed)});
    if (!cfg.limit.empty()) args.insert(args.end(), {"--limit", cfg.limit});
    workers.push_back(std::make_unique<DemoProcess>(
        demo_instance_name(i), args,
        std::vector<std::string>{"KVPAGER_SHM_PREFIX=" + rc.prefix, "KVPAGER_SHM_DIR=" + rc.dir,
                                 "KVPAGER_GPU_UTILIZATION=" + cfg.budget}));
  }
  std::string device, description;
  uint64_t total = 0;
  for (auto& w : workers) {
    const std::string ready = read_from(*w, Clock::now() + std::chrono::seconds(120));
    char dev[64] = {0};
    unsigned long long tot = 0;
    int used = 0;
    if (std::sscanf(ready.c_str(), "ready %63s %llu %n", dev, &tot, &used) < 2) {
      throw StateError("demo: unexpected answer from model instance " + w->name() + ": " + ready);
    }
    device = dev;
    total = tot;
    description = ready.substr(static_cast<size_t>(used));
  }
  // The budget segment may predate this run: set it explicitly.
  limits::DeviceBudget budget = limits::DeviceBudget::open_existing(rc, device);
  budget.set_budget(limits::parse_budget(cfg.budget, total));
  const uint64_t budget_bytes = budget.budget_bytes();

  std::printf("kvpager demo: %d model instances (processes) share %s under a budget of %s\n",
              cfg.instances, description.c_str(), format_size(budget_bytes).c_str());
  std::printf(
      "each: Llama-3.1-8B KV shape, %s virtual KV space%s; load moves between them in "
      "%d bursts\n",
      cfg.capacity.c_str(), cfg.limit.empty() ? "" : (", limit " + cfg.limit).c_str(),
      demo_slots(cfg));
  std::printf("watch it live: KVPAGER_SHM_PREFIX=%s kvpager top\n\n", rc.prefix.c_str());
  std::fflush(stdout);

  const auto start = Clock::now() + std::chrono::milliseconds(200);
  for (auto& w : workers) {
    w->send("go " + std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       start.time_since_epoch())
                                       .count()));
  }
  std::this_thread::sleep_until(start);
  if (stop_signal() != 0) interrupted();

  // Sample the registry every 50 ms; print a line every 500 ms.
  const int n = cfg.instances;
  std::vector<SlotStats> slots(static_cast<size_t>(demo_slots(cfg)));
  for (auto& s : slots) {
    s.mapped_sum.assign(static_cast<size_t>(n), 0);
    s.mapped_max.assign(static_cast<size_t>(n), 0);
  }
  uint64_t samples = 0, peak_sum = 0;
  int next_print = 0;
  const auto end = start + std::chrono::duration<double>(cfg.duration_s);
  while (Clock::now() < end) {
    if (stop_signal() != 0) interrupted();
    check_workers(workers);
    const double t = std::chrono::duration<double>(Clock::now() - start).count();
    const limits::DeviceRecord d = budget.snapshot_locked();  // consistent under the lock
    if (d.charged_bytes > d.budget_bytes) {
      throw StateError("demo: the device budget was exceeded (" + format_size(d.charged_bytes) +
                       ")");
    }
    peak_sum = std::max(peak_sum, d.charged_bytes);
    ++samples;
    std::vector<uint64_t> mapped(static_cast<size_t>(n), 0);
    for (const auto& m : d.members) {
      for (int i = 0; i < n; ++i) {
        if (m.name == demo_instance_name(i)) mapped[static_cast<size_t>(i)] = m.charged_bytes;
      }
    }
    const int slot = demo_slot(cfg, t);
    if (slot >= 0) {
      SlotStats& s = slots[static_cast<size_t>(slot)];
      for (size_t i = 0; i < mapped.size(); ++i) {
        s.mapped_sum[i] += static_cast<double>(mapped[i]);
        s.mapped_max[i] = std::max(s.mapped_max[i], mapped[i]);
      }
      ++s.samples;
    }
    if (t * 2 >= next_print) {
      ++next_print;
      const int busy = demo_busy_instance(cfg, t);
      std::string line;
      char head[64];
      std::snprintf(
          head, sizeof head, "t=%5.1fs %-7s|", t,
          busy < 0 ? "drain" : ("busy " + std::string(1, static_cast<char>('a' + busy))).c_str());
      line = head;
      for (int i = 0; i < n; ++i) {
        char cell[96];
        std::snprintf(cell, sizeof cell, " %c%c %6s %s", 'a' + i, i == busy ? '*' : ' ',
                      short_size(mapped[static_cast<size_t>(i)]).c_str(),
                      bar(mapped[static_cast<size_t>(i)], budget_bytes, 10).c_str());
        line += cell;
      }
      char tail[64];
      std::snprintf(tail, sizeof tail, " | sum %s/%s", short_size(d.charged_bytes).c_str(),
                    short_size(budget_bytes).c_str());
      std::printf("%s%s\n", line.c_str(), tail);
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  std::vector<nlohmann::json> summaries;
  for (auto& w : workers) {
    const std::string line = read_from(*w, Clock::now() + std::chrono::seconds(60));
    if (line.rfind("summary ", 0) != 0) {
      throw StateError("demo: unexpected output from model instance " + w->name() + ": " + line);
    }
    summaries.push_back(nlohmann::json::parse(line.substr(8)));
  }
  for (auto& w : workers) {
    if (w->wait() != 0) throw StateError("demo: model instance " + w->describe());
  }

  uint64_t admitted = 0, finished = 0, deferred = 0, preempted = 0, peak_one = 0, idle_max = 0;
  uint64_t trim_min = UINT64_MAX, trim_max = 0;
  double p50 = 0, p99 = 0;
  for (const auto& s : summaries) {
    admitted += s["admitted"].get<uint64_t>();
    finished += s["finished"].get<uint64_t>();
    deferred += s["deferred"].get<uint64_t>();
    preempted += s["preempted"].get<uint64_t>();
    peak_one = std::max(peak_one, s["peak_mapped"].get<uint64_t>());
    idle_max = std::max(idle_max, s["idle_mapped"].get<uint64_t>());
    trim_min = std::min(trim_min, s["mapped_after_trim"].get<uint64_t>());
    trim_max = std::max(trim_max, s["mapped_after_trim"].get<uint64_t>());
    p50 = std::max(p50, s["alloc_p50_us"].get<double>());
    p99 = std::max(p99, s["alloc_p99_us"].get<double>());
  }
  std::printf("\n=== demo summary ===\n");
  std::printf("instances / device / budget    : %d processes on %s, budget %s\n", n, device.c_str(),
              format_size(budget_bytes).c_str());
  std::printf(
      "requests admitted / finished   : %llu / %llu (%llu admissions deferred for memory, "
      "%llu preemptions)\n",
      static_cast<unsigned long long>(admitted), static_cast<unsigned long long>(finished),
      static_cast<unsigned long long>(deferred), static_cast<unsigned long long>(preempted));
  std::printf("peak mapped                    : %s (largest instance); all together at most %s\n",
              format_size(peak_one).c_str(), format_size(peak_sum).c_str());
  std::printf(
      "budget never exceeded          : %llu samples of the sum under the device lock, "
      "never above %s\n",
      static_cast<unsigned long long>(samples), format_size(budget_bytes).c_str());
  std::printf("mapped when idle (idle pages)  : %s (largest instance)\n",
              format_size(idle_max).c_str());
  std::printf("mapped after trim              : %s (null block page%s)\n",
              format_size(trim_max).c_str(), trim_min == trim_max ? ", per instance" : "; largest");
  std::printf("alloc latency p50 / p99        : %.2f / %.2f us (slowest instance)\n", p50, p99);
  std::printf("\n%-8s %9s %9s %9s %9s %12s %17s\n", "instance", "admitted", "finished", "deferred",
              "preempted", "peak mapped", "alloc p50/p99 us");
  for (const auto& s : summaries) {
    std::printf("%-8s %9llu %9llu %9llu %9llu %12s %8.1f/%-8.1f\n",
                s["name"].get<std::string>().c_str(), s["admitted"].get<unsigned long long>(),
                s["finished"].get<unsigned long long>(), s["deferred"].get<unsigned long long>(),
                s["preempted"].get<unsigned long long>(),
                format_size(s["peak_mapped"].get<uint64_t>()).c_str(),
                s["alloc_p50_us"].get<double>(), s["alloc_p99_us"].get<double>());
  }
  std::printf("\nmemory held per burst (mean while it ran; * = the busy instance):\n%-6s %-6s",
              "burst", "busy");
  for (int i = 0; i < n; ++i) std::printf(" %12s", demo_instance_name(i).c_str());
  std::printf(" %14s\n", "busy share");
  double share_sum = 0;
  int share_count = 0;
  for (size_t k = 0; k < slots.size(); ++k) {
    const SlotStats& s = slots[k];
    if (s.samples == 0) continue;
    const int busy = static_cast<int>(k % static_cast<size_t>(n));
    std::printf("%-6zu %-6s", k + 1, demo_instance_name(busy).c_str());
    double all = 0;
    for (int i = 0; i < n; ++i) all += s.mapped_sum[static_cast<size_t>(i)];
    for (int i = 0; i < n; ++i) {
      const double mean = s.mapped_sum[static_cast<size_t>(i)] / static_cast<double>(s.samples);
      std::printf(" %11s%c", format_size(static_cast<uint64_t>(mean)).c_str(),
                  i == busy ? '*' : ' ');
    }
    const double share = all > 0 ? s.mapped_sum[static_cast<size_t>(busy)] / all : 0;
    share_sum += share;
    ++share_count;
    std::printf(" %13.0f%%\n", share * 100);
  }
  if (share_count > 0 && n > 1) {
    std::printf(
        "memory followed the load: the busy instance held %.0f%% of the instances' memory "
        "on average during its burst (an even split would be %.0f%%)\n",
        100 * share_sum / share_count, 100.0 / n);
  }
}

void register_demo(CommandGroups& groups) {
  auto cfg = std::make_shared<DemoConfig>();
  CLI::App* cmd = groups.root.add_subcommand(
      "demo", "Model instances (processes) sharing one device's memory under a bursty load");
  cmd->add_option("--backend", cfg->backend, "auto|host|cuda")->capture_default_str();
  cmd->add_option("--layout", cfg->layout, "per-layer|interleaved")->capture_default_str();
  cmd->add_option("--duration", cfg->duration_s, "seconds")
      ->capture_default_str()
      ->check(finite_in(1, 600));
  cmd->add_option("--bursts", cfg->bursts, "load peaks during the run (rotating between instances)")
      ->capture_default_str()
      ->check(integer_in(1, 100));
  cmd->add_option("--peak-rate", cfg->peak_rate, "requests/s at a peak")
      ->capture_default_str()
      ->check(positive_up_to(kDemoMaxRate));
  cmd->add_option("--idle-rate", cfg->idle_rate, "requests/s outside a burst")
      ->capture_default_str()
      ->check(finite_in(0, kDemoMaxRate));
  cmd->add_option("--capacity", cfg->capacity, "virtual KV capacity per instance (e.g. 4GiB)")
      ->capture_default_str();
  cmd->add_option("--limit", cfg->limit, "memory limit per instance (e.g. 2GiB)");
  cmd->add_option("--seed", cfg->seed, "random seed")
      ->capture_default_str()
      ->check(integer_in(0, std::numeric_limits<unsigned>::max()));
  cmd->add_option("--instances", cfg->instances, "model instances (processes), 1 to 4")
      ->capture_default_str()
      ->check(integer_in(1, 4));
  cmd->add_option("--budget", cfg->budget, "device budget: size, fraction or percentage")
      ->capture_default_str();
  cmd->add_option("--prefix", cfg->prefix, "registry namespace of the demo (/dev/shm prefix)")
      ->capture_default_str();
  cmd->callback([cfg] { run_demo(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_demo);

}  // namespace kvpager::cli

// kvpager bench tp-ipc: the TP IPC benchmark of the seed (000): a scheduler broadcasts map and
// unmap commands to tp_size worker processes with one of the broadcast strategies and times
// each broadcast until every rank acknowledged; plus the round trip of a no-op command.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/tp/tp_scheduler.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::cli {
namespace {

using tp::Clock;

struct TpIpcOptions {
  int tp_size = 0;
  uint32_t pages_per_iter = 1;
  int iters = 20;
  std::string map_impl = "seq";
  bool verbose = false;
  uint32_t num_layers = 32;
  bool async_sched = false;
  uint32_t block_size = 16;
  std::string layout = "interleaved";
  std::string device_mode = "auto";
  std::string backend = "auto";
  std::string handle_size = "2M";
  int warmup = 3;
  int noop_iters = 1000;
  bool no_device_lock = false;
  bool device_lock = false;
  bool json = false;
};

double ms(int64_t ns) {
  return static_cast<double>(ns) / 1e6;
}

int64_t elapsed_ns(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
}

void run_tp_ipc(const TpIpcOptions& o) {
  tp::TpConfig config = tp::tp_config_from_env();
  config.tp_size = o.tp_size;
  config.strategy = o.map_impl;
  config.device_mode = tp::parse_device_mode(o.device_mode);
  config.worker.backend = vmm::backend_config_from_env();
  if (o.backend != "env") config.worker.backend.choice = vmm::parse_backend_choice(o.backend);
  config.worker.geometry = tp::bench_geometry(o.num_layers, o.block_size);
  config.worker.layout = kv::parse_layout(o.layout);
  config.worker.handle_bytes = parse_size(o.handle_size);
  if (o.no_device_lock) config.device_lock = tp::DeviceLockMode::kOff;
  if (o.device_lock) config.device_lock = tp::DeviceLockMode::kOn;
  config.worker.ready_pages = o.pages_per_iter;
  config.worker.background_refill = o.async_sched;
  tp::find_strategy(o.map_impl);  // a clear error before any process starts

  tp::TpScheduler scheduler(config);
  if (o.pages_per_iter == 0 || o.pages_per_iter > scheduler.num_pages() ||
      o.pages_per_iter > tp::kMaxPagesPerCommand) {
    throw InvalidArgument("--pages-per-iter " + std::to_string(o.pages_per_iter) + " must be 1.." +
                          std::to_string(std::min(scheduler.num_pages(), tp::kMaxPagesPerCommand)) +
                          " (the KV space has " + std::to_string(scheduler.num_pages()) +
                          " virtual pages)");
  }
  // As the seed: pages 50, 51, ... (moved down when the virtual range is smaller).
  const uint32_t first = std::min<uint32_t>(50, scheduler.num_pages() - o.pages_per_iter);
  std::vector<PageId> pages;
  for (uint32_t i = 0; i < o.pages_per_iter; ++i) pages.push_back(PageId(first + i));

  for (int i = 0; i < o.warmup; ++i) {
    scheduler.map(pages);
    scheduler.unmap(pages);
  }
  std::vector<double> map_ms, unmap_ms, noop_us;
  for (int i = 0; i < o.iters; ++i) {
    auto t0 = Clock::now();
    scheduler.map(pages);
    map_ms.push_back(ms(elapsed_ns(t0)));
    t0 = Clock::now();
    scheduler.unmap(pages);
    unmap_ms.push_back(ms(elapsed_ns(t0)));
    if (o.verbose && !o.json) {
      std::printf("iter %3d: map %8.3f ms  unmap %8.3f ms\n", i, map_ms.back(), unmap_ms.back());
    }
  }
  for (int i = 0; i < o.noop_iters; ++i) {
    const auto t0 = Clock::now();
    scheduler.ping();
    noop_us.push_back(static_cast<double>(elapsed_ns(t0)) / 1e3);
  }
  const LatencySummary m = summarize(map_ms);
  const LatencySummary u = summarize(unmap_ms);
  const LatencySummary n = summarize(noop_us);
  const double per_page = 1.0 / o.pages_per_iter;
  const auto& cfg = scheduler.config();
  const std::string backend_name = cfg.worker.backend.choice == vmm::BackendChoice::kHost   ? "host"
                                   : cfg.worker.backend.choice == vmm::BackendChoice::kCuda ? "cuda"
                                   : vmm::CudaDriver::device_present()                      ? "cuda"
                                                                       : "host";

  if (o.json) {
    nlohmann::json j = {
        {"bench", "tp-ipc"},
        {"map_impl", o.map_impl},
        {"tp_size", o.tp_size},
        {"iters", o.iters},
        {"pages_per_iter", o.pages_per_iter},
        {"num_layers", o.num_layers},
        {"block_size", o.block_size},
        {"layout", o.layout},
        {"device_mode", tp::device_mode_name(cfg.device_mode)},
        {"backend", backend_name},
        {"async_sched", o.async_sched},
        {"device_lock", scheduler.device_lock_active()},
        {"num_pages", scheduler.num_pages()},
        {"handles_per_page", scheduler.handles_per_page()},
        {"map_mean_ms", m.mean},
        {"map_p95_ms", m.p95},
        {"map_max_ms", m.max},
        {"map_min_ms", m.min},
        {"map_per_page_mean_ms", m.mean * per_page},
        {"unmap_mean_ms", u.mean},
        {"unmap_p95_ms", u.p95},
        {"unmap_max_ms", u.max},
        {"unmap_min_ms", u.min},
        {"unmap_per_page_mean_ms", u.mean * per_page},
        {"noop_samples", n.count},
        {"noop_p50_us", n.p50},
        {"noop_mean_us", n.mean},
        {"noop_p95_us", n.p95},
        {"noop_max_us", n.max},
    };
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("\n=== IPC Benchmark Summary ===\n");
  std::printf("Broadcast impl       : %s (%s)\n", o.map_impl.c_str(), scheduler.strategy().source);
  std::printf("TP size                 : %d\n", o.tp_size);
  std::printf("Iterations              : %d\n", o.iters);
  std::printf("Pages Per Iteration     : %u\n", o.pages_per_iter);
  std::printf("Layout                  : %s, %u layers, block %u (%u handle(s) per page)\n",
              o.layout.c_str(), o.num_layers, o.block_size, scheduler.handles_per_page());
  std::printf("Devices                 : %s, device mode %s%s\n\n", backend_name.c_str(),
              tp::device_mode_name(cfg.device_mode),
              scheduler.device_lock_active() ? ", ranks take turns per device" : "");
  std::printf("+---------------+-----------+------------+\n");
  std::printf("| Metric        |  Map (ms) | Unmap (ms) |\n");
  std::printf("|---------------|-----------|------------|\n");
  std::printf("| mean          | %9.3f | %10.3f |\n", m.mean, u.mean);
  std::printf("| p95           | %9.3f | %10.3f |\n", m.p95, u.p95);
  std::printf("| max           | %9.3f | %10.3f |\n", m.max, u.max);
  std::printf("| min           | %9.3f | %10.3f |\n", m.min, u.min);
  std::printf("|---------------|-----------|------------|\n");
  std::printf("| per-page mean | %9.3f | %10.3f |\n", m.mean * per_page, u.mean * per_page);
  std::printf("+---------------+-----------+------------+\n\n");
  std::printf(
      "Broadcast overhead (no-op round trip to %d rank(s), %zu samples): p50 %.1f us, "
      "mean %.1f us, p95 %.1f us\n",
      o.tp_size, n.count, n.p50, n.mean, n.p95);
}

void register_tp_ipc(CommandGroups& groups) {
  auto o = std::make_shared<TpIpcOptions>();
  CLI::App* cmd = groups.bench.add_subcommand(
      "tp-ipc", "Map/unmap broadcast from a scheduler to tensor-parallel worker processes");
  cmd->add_option("--tp-size", o->tp_size, "Number of tensor-parallel workers")
      ->required()
      ->check(integer_in(1, tp::kMaxRanks));
  cmd->add_option("--pages-per-iter", o->pages_per_iter, "Pages to map per iteration")
      ->capture_default_str();
  cmd->add_option("--iters", o->iters, "Benchmark iterations")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  std::string impls;
  for (const auto& s : tp::strategies()) impls += (impls.empty() ? "" : "|") + std::string(s.name);
  cmd->add_option("--map-impl", o->map_impl, "Broadcast strategy: " + impls)->capture_default_str();
  cmd->add_flag("-v,--verbose", o->verbose, "Show per-iteration timings");
  cmd->add_option("--num-layers", o->num_layers, "Layers (8 KV heads x 128, fp16)")
      ->capture_default_str()
      ->check(integer_in(1, 1024));
  cmd->add_flag("--async-sched", o->async_sched,
                "Workers keep handles ready with a background pool thread (else the pool is "
                "filled once and refilled inline)");
  cmd->add_option("--block-size", o->block_size, "Tokens per block")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--layout", o->layout, "per-layer | interleaved")->capture_default_str();
  cmd->add_option("--device-mode", o->device_mode,
                  "per-rank (rank r on device r) | same (all on device 0) | auto")
      ->capture_default_str();
  cmd->add_option("--backend", o->backend, "cuda | host | auto")->capture_default_str();
  cmd->add_option("--handle-size", o->handle_size,
                  "Physical handle size (raised to one interleaved block when smaller)")
      ->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed map/unmap iterations first")
      ->capture_default_str();
  cmd->add_option("--noop-iters", o->noop_iters, "No-op round trips timed")->capture_default_str();
  cmd->add_flag("--no-device-lock", o->no_device_lock,
                "Ranks on one CUDA device call the driver at once (the default)");
  cmd->add_flag("--device-lock", o->device_lock,
                "Ranks on one CUDA device take turns at the driver, one command each");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of the table");
  cmd->callback([o] { run_tp_ipc(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_tp_ipc);
}  // namespace kvpager::cli

// kvpager bench map-parallel: the map-parallelism benchmark of the seed (001). One process maps
// N/P pages (single), one process maps N pages (serial), P processes map N/P pages each at
// once (parallel). Every process is a tp worker with its own KV space; one shm broadcast per
// iteration releases them together (the per-iteration barrier), and the wall time of an
// iteration is from the first rank's start to the last rank's end (CLOCK_MONOTONIC, measured
// in the workers), so the slowest rank decides it.
#include <algorithm>
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

namespace kvpager::cli {
namespace {

struct MapParallelOptions {
  uint32_t pages_total = 0;
  int procs = 1;
  int iters = 20;
  uint32_t num_layers = 32;
  uint32_t block_size = 16;
  std::string layout = "interleaved";
  std::string device_mode = "auto";
  std::string backend = "auto";
  std::string handle_size = "2M";
  bool no_pool = false;
  int warmup = 2;
  bool no_device_lock = false;
  bool with_device_lock = false;
  bool json = false;
};

struct CaseResult {
  const char* key;    // JSON prefix
  std::string title;  // table heading
  int procs = 0;
  uint32_t pages_per_proc = 0;
  LatencySummary map;
  LatencySummary unmap;
  std::string device_mode;
  bool device_lock = false;
};

// Wall time of the last broadcast in ms: first rank's start to last rank's end.
double wall_ms(std::span<const tp::Reply> replies) {
  int64_t start = INT64_MAX, end = INT64_MIN;
  for (const auto& r : replies) {
    start = std::min(start, r.start_ns);
    end = std::max(end, r.end_ns);
  }
  return static_cast<double>(end - start) / 1e6;
}

CaseResult run_case(const MapParallelOptions& o, const char* key, std::string title, int procs,
                    uint32_t pages_per_proc) {
  tp::TpConfig config = tp::tp_config_from_env();
  config.tp_size = procs;
  config.strategy = "shm";
  config.device_mode = tp::parse_device_mode(o.device_mode);
  config.worker.backend = vmm::backend_config_from_env();
  if (o.backend != "env") config.worker.backend.choice = vmm::parse_backend_choice(o.backend);
  config.worker.geometry = tp::bench_geometry(o.num_layers, o.block_size);
  config.worker.layout = kv::parse_layout(o.layout);
  config.worker.handle_bytes = parse_size(o.handle_size);
  if (o.no_device_lock) config.device_lock = tp::DeviceLockMode::kOff;
  if (o.with_device_lock) config.device_lock = tp::DeviceLockMode::kOn;
  config.worker.ready_pages = pages_per_proc;
  config.worker.pool = !o.no_pool;

  tp::TpScheduler scheduler(config);
  if (pages_per_proc > scheduler.num_pages() || pages_per_proc > tp::kMaxPagesPerCommand) {
    throw InvalidArgument(std::to_string(pages_per_proc) +
                          " pages per process do not fit: the KV "
                          "space has " +
                          std::to_string(scheduler.num_pages()) + " virtual pages (at most " +
                          std::to_string(tp::kMaxPagesPerCommand) + " per command)");
  }
  std::vector<PageId> pages;
  for (uint32_t i = 0; i < pages_per_proc; ++i) pages.push_back(PageId(i));
  for (int i = 0; i < o.warmup; ++i) {
    scheduler.map(pages);
    scheduler.unmap(pages);
  }
  std::vector<double> map_ms, unmap_ms;
  for (int i = 0; i < o.iters; ++i) {
    scheduler.map(pages);
    map_ms.push_back(wall_ms(scheduler.last_replies()));
    scheduler.unmap(pages);
    unmap_ms.push_back(wall_ms(scheduler.last_replies()));
  }
  return CaseResult{key,
                    std::move(title),
                    procs,
                    pages_per_proc,
                    summarize(map_ms),
                    summarize(unmap_ms),
                    tp::device_mode_name(scheduler.config().device_mode),
                    scheduler.device_lock_active()};
}

void print_case(const CaseResult& c, int iters) {
  std::printf("========== %s ==========\n", c.title.c_str());
  std::printf("Processes           : %d\n", c.procs);
  std::printf("Iterations          : %d\n", iters);
  std::printf("Pages total / iter  : %u\n", c.pages_per_proc * static_cast<uint32_t>(c.procs));
  std::printf("Pages per proc / iter: %u \n\n", c.pages_per_proc);
  std::printf("+-----------------+-------------+\n");
  std::printf("| Metric          | ms          |\n");
  std::printf("+-----------------+-------------+\n");
  std::printf("| mean wall       | %11.3f |\n", c.map.mean);
  std::printf("| p95 wall        | %11.3f |\n", c.map.p95);
  std::printf("| max wall        | %11.3f |\n", c.map.max);
  std::printf("| min wall        | %11.3f |\n", c.map.min);
  std::printf("| unmap mean wall | %11.3f |\n", c.unmap.mean);
  std::printf("+-----------------+-------------+\n\n");
}

void run_map_parallel(const MapParallelOptions& o) {
  if (o.pages_total == 0 || o.pages_total % static_cast<uint32_t>(o.procs) != 0) {
    throw InvalidArgument("--pages-total " + std::to_string(o.pages_total) +
                          " must be a positive multiple of --procs " + std::to_string(o.procs));
  }
  const uint32_t share = o.pages_total / static_cast<uint32_t>(o.procs);
  std::vector<CaseResult> cases;
  cases.push_back(run_case(o, "single", "Single Process case (1 proc maps N/P pages)", 1, share));
  cases.push_back(run_case(o, "serial", "Serial case (1 proc maps N pages)", 1, o.pages_total));
  cases.push_back(run_case(o, "parallel",
                           "Parallel case (" + std::to_string(o.procs) + " procs map N/P each)",
                           o.procs, share));
  const double speedup = cases[1].map.mean / cases[2].map.mean;

  if (o.json) {
    nlohmann::json j = {{"bench", "map-parallel"},
                        {"pages_total", o.pages_total},
                        {"procs", o.procs},
                        {"iters", o.iters},
                        {"num_layers", o.num_layers},
                        {"block_size", o.block_size},
                        {"layout", o.layout},
                        {"device_mode", cases[2].device_mode},
                        {"backend", o.backend},
                        {"pool", !o.no_pool},
                        {"device_lock", cases[2].device_lock},
                        {"speedup_mean", speedup}};
    for (const auto& c : cases) {
      const std::string k = c.key;
      j[k + "_pages_per_proc"] = c.pages_per_proc;
      j[k + "_mean_ms"] = c.map.mean;
      j[k + "_p95_ms"] = c.map.p95;
      j[k + "_max_ms"] = c.map.max;
      j[k + "_min_ms"] = c.map.min;
      j[k + "_unmap_mean_ms"] = c.unmap.mean;
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("Layout: %s, %u layers, block %u; handles %s; device mode %s%s\n\n", o.layout.c_str(),
              o.num_layers, o.block_size,
              o.no_pool ? "created inside map, released inside unmap (--no-pool)"
                        : "taken from a pre-filled pool",
              cases[2].device_mode.c_str(),
              cases[2].device_lock ? ", processes take turns at the driver" : "");
  for (const auto& c : cases) print_case(c, o.iters);
  std::printf(
      "Speedup (parallel vs serial): mean x%.2f   (ideal being approximately %.2f if "
      "perfect overlap)\n",
      speedup, static_cast<double>(o.procs));
  if (cases[2].device_mode == "same" && o.procs > 1) {
    std::printf(
        "All processes share device 0: the CUDA driver serialises VMM work per device, "
        "so no speed-up is possible on one GPU.\n");
  }
}

void register_map_parallel(CommandGroups& groups) {
  auto o = std::make_shared<MapParallelOptions>();
  CLI::App* cmd = groups.bench.add_subcommand(
      "map-parallel", "How page mapping scales with processes: single, serial, parallel");
  cmd->add_option("--pages-total", o->pages_total, "Total pages to map per iteration (N)")
      ->required();
  cmd->add_option("--procs", o->procs, "Worker processes (P)")
      ->capture_default_str()
      ->check(integer_in(1, tp::kMaxRanks));
  cmd->add_option("--iters", o->iters, "Benchmark iterations")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  cmd->add_option("--num-layers", o->num_layers, "Layers (8 KV heads x 128, fp16)")
      ->capture_default_str()
      ->check(integer_in(1, 1024));
  cmd->add_option("--block-size", o->block_size, "Tokens per block")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--layout", o->layout, "per-layer | interleaved")->capture_default_str();
  cmd->add_option("--device-mode", o->device_mode,
                  "per-rank (process r on device r) | same (all on device 0) | auto")
      ->capture_default_str();
  cmd->add_option("--backend", o->backend, "cuda | host | auto")->capture_default_str();
  cmd->add_option("--handle-size", o->handle_size, "Physical handle size")->capture_default_str();
  cmd->add_flag("--no-pool", o->no_pool,
                "Create handles inside map and release them inside unmap (no pool)");
  cmd->add_option("--warmup", o->warmup, "Untimed iterations first")->capture_default_str();
  cmd->add_flag("--no-device-lock", o->no_device_lock,
                "Processes on one CUDA device call the driver at once (the default)");
  cmd->add_flag("--device-lock", o->with_device_lock,
                "Processes on one CUDA device take turns at the driver, one command each");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of the tables");
  cmd->callback([o] { run_map_parallel(*o); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_map_parallel);
}  // namespace kvpager::cli

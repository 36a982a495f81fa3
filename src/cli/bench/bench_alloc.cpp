// kvpager bench alloc: block alloc/free latency from a mapped-ahead reserve (hot) and when the
// allocation must map a page itself (cold); mapping throughput of the interleaved vs per-layer
// layout for the same bytes and blocks per page; and what the zero-page option costs per page.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <thread>

#include "bench/bench_clock.hpp"
#include "bench/text_table.hpp"
#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_cache.hpp"

namespace kvpager::cli {
namespace {

struct AllocBenchConfig {
  std::string backend = "auto";
  int device = 0;
  int iters = 100000;        // hot alloc+free pairs
  int cold_iters = 200;      // cold allocations
  int map_pages = 8;         // logical pages mapped per layout in the throughput test
  uint32_t num_layers = 32;  // Llama-3.1-8B shape: 8 KV heads x 128, bf16, 16-token blocks
  uint32_t kv_heads = 8;
  uint32_t head_dim = 128;
  uint32_t block_size = 16;
  bool json = false;
};

kv::KvGeometry geometry(const AllocBenchConfig& c) {
  kv::KvGeometry g;
  g.num_layers = c.num_layers;
  g.kv_heads = c.kv_heads;
  g.head_dim = c.head_dim;
  g.dtype_bytes = 2;
  g.block_size = c.block_size;
  return g;
}

// Mean microseconds to map and to unmap one logical page of a KvSpace, handles from a full pool.
struct PageCost {
  double map_us = 0, unmap_us = 0;
  uint64_t page_bytes = 0;
  size_t handles_per_page = 0;
};

PageCost measure_pages(std::shared_ptr<vmm::Backend> backend, const kv::KvGeometry& g,
                       kv::KvLayout layout, uint64_t handle_bytes, int pages, int rounds,
                       bool zero) {
  const uint64_t cell =
      layout == kv::KvLayout::kInterleaved ? g.block_bytes_all_layers() : g.block_bytes();
  const uint64_t blocks = handle_bytes / cell * static_cast<uint64_t>(pages);
  const size_t hpp = layout == kv::KvLayout::kInterleaved ? 1 : g.num_layers * g.components();
  const size_t handles = hpp * static_cast<size_t>(pages);
  pool::PagePool pool(backend, nullptr, {handle_bytes, handles, handles, true});
  while (pool.stats().ready < handles) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kv::KvSpace space(backend, pool, kv::KvSpaceConfig{g, layout, blocks, zero});
  std::vector<double> map, unmap;
  for (int r = 0; r < rounds + 1; ++r) {
    const double m = time_us([&] {
      for (int p = 0; p < pages; ++p) space.map_page(PageId{static_cast<uint32_t>(p)});
    });
    const double u = time_us([&] {
      for (int p = 0; p < pages; ++p) space.unmap_page(PageId{static_cast<uint32_t>(p)});
    });
    if (r == 0) continue;
    map.push_back(m / pages);
    unmap.push_back(u / pages);
  }
  return {summarize(map).mean, summarize(unmap).mean, space.page_bytes(), hpp};
}

// What the geometry makes the benchmark reserve and map, checked before anything is made:
// one block of every layer must fit the 2 MiB handles of the interleaved rounds, and the
// throughput rounds map (per layer and K/V) 2 MiB x layers x 2 x --map-pages twice over.
constexpr uint64_t kSmallHandle = 2 * MiB;
constexpr uint64_t kMaxMappedByRounds = 16 * GiB;

void check_alloc_bench(const AllocBenchConfig& cfg) {
  const kv::KvGeometry g = geometry(cfg);
  if (g.block_bytes_all_layers() > kSmallHandle) {
    throw InvalidArgument("bench alloc: one block of every layer is " +
                          format_size(g.block_bytes_all_layers()) +
                          " (--num-layers x --kv-heads x --head-dim x 2 bytes x --block-size x "
                          "K/V); it must fit a 2 MiB handle");
  }
  const uint64_t per_layer_page = kSmallHandle * g.num_layers * g.components();
  const uint64_t mapped = (2 * per_layer_page + 8 * kSmallHandle) * cfg.map_pages;
  if (mapped > kMaxMappedByRounds) {
    throw InvalidArgument("bench alloc: the throughput rounds would map " + format_size(mapped) +
                          " (--num-layers " + std::to_string(cfg.num_layers) + ", --map-pages " +
                          std::to_string(cfg.map_pages) + "); at most " +
                          format_size(kMaxMappedByRounds));
  }
}

void run_alloc_bench(const AllocBenchConfig& cfg) {
  check_alloc_bench(cfg);
  vmm::BackendConfig bc = vmm::backend_config_from_env();
  bc.choice = vmm::parse_backend_choice(cfg.backend);
  bc.device = cfg.device;
  auto backend = vmm::make_backend(bc);
  const kv::KvGeometry g = geometry(cfg);
  nlohmann::json out;
  out["backend"] = backend->describe();

  // Hot: the reserve is mapped ahead; alloc(1) + free(1) pops and pushes a free list.
  kv::KvCacheConfig hc;
  hc.geometry = g;
  hc.layout = kv::KvLayout::kInterleaved;
  hc.num_blocks = 256;
  hc.reserve_pages = 4;
  hc.max_idle_pages = 8;
  kv::KvCache hot(backend, hc);
  while (hot.stats().free_pages < hc.reserve_pages) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<double> pair, a_only, f_only;
  pair.reserve(static_cast<size_t>(cfg.iters));
  BlockId id[1];
  for (int i = 0; i < cfg.iters + 1000; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    hot.alloc(1, id);
    const auto t1 = std::chrono::steady_clock::now();
    hot.free(id);
    const auto t2 = std::chrono::steady_clock::now();
    if (i < 1000) continue;
    a_only.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    f_only.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    pair.push_back(std::chrono::duration<double, std::micro>(t2 - t0).count());
  }
  const uint64_t hot_cold = hot.stats().cold_allocs;

  // Cold: nothing mapped ahead; every alloc maps its page (handles from the pool).
  kv::KvCacheConfig cc = hc;
  cc.reserve_pages = 0;
  cc.max_idle_pages = 0;
  cc.background = false;
  cc.pool_min_ready = 0;
  cc.pool_max_ready = 4;
  kv::KvCache cold(backend, cc);
  std::vector<double> cold_alloc, cold_free;
  const size_t per_page = cold.stats().max_blocks_per_page;
  std::vector<BlockId> page_blocks(per_page);
  for (int i = 0; i < cfg.cold_iters + 2; ++i) {
    const double a = time_us([&] { cold.alloc(per_page, page_blocks); });
    const double f = time_us([&] { cold.free(page_blocks); });  // unmaps (max_idle_pages 0)
    if (i < 2) continue;
    cold_alloc.push_back(a);
    cold_free.push_back(f);
  }

  TextTable lat({"Block alloc/free (1 block)", "mean (us)", "p50 (us)", "p99 (us)", "max (us)"});
  auto add = [&](const std::string& name, const std::string& key, const std::vector<double>& v) {
    const LatencySummary s = summarize(v);
    lat.add_row({name, fixed(s.mean, 3), fixed(s.p50, 3), fixed(s.p99, 3), fixed(s.max, 3)});
    out[key + "_mean_us"] = s.mean;
    out[key + "_p50_us"] = s.p50;
    out[key + "_p99_us"] = s.p99;
    out[key + "_max_us"] = s.max;
  };
  add("alloc+free, mapped ahead", "alloc_free", pair);
  add("alloc, mapped ahead", "alloc", a_only);
  add("free, mapped ahead", "free", f_only);
  lat.add_separator();
  add("alloc, cold (maps its page)", "cold_alloc", cold_alloc);
  add("free, cold (unmaps its page)", "cold_free", cold_free);
  out["hot_cold_allocs"] = hot_cold;

  // Mapping throughput, same bytes and the same blocks per logical page: per-layer maps one
  // handle per layer and K/V; interleaved maps one handle holding the page for every layer.
  const uint64_t g2 = std::max<uint64_t>(backend->granularity(), 2 * MiB);
  const uint64_t per_layer_page = g2 * g.num_layers * g.components();
  const PageCost per_layer =
      measure_pages(backend, g, kv::KvLayout::kPerLayer, g2, cfg.map_pages, 5, false);
  const PageCost interleaved = measure_pages(backend, g, kv::KvLayout::kInterleaved, per_layer_page,
                                             cfg.map_pages, 5, false);
  const PageCost interleaved_small =
      measure_pages(backend, g, kv::KvLayout::kInterleaved, g2, cfg.map_pages * 8, 5, false);
  auto gibs = [](const PageCost& c) {
    return static_cast<double>(c.page_bytes) / (c.map_us * 1e-6) / static_cast<double>(GiB);
  };
  TextTable tput({"Mapping throughput (" + std::to_string(g.num_layers) + " layers)", "page",
                  "handles/page", "map (us/page)", "unmap (us/page)", "map (GiB/s)"});
  auto trow = [&](const std::string& name, const std::string& key, const PageCost& c) {
    tput.add_row({name, format_size(c.page_bytes), std::to_string(c.handles_per_page),
                  fixed(c.map_us), fixed(c.unmap_us), fixed(gibs(c))});
    out[key + "_map_us_per_page"] = c.map_us;
    out[key + "_unmap_us_per_page"] = c.unmap_us;
    out[key + "_map_gib_per_s"] = gibs(c);
  };
  trow("per-layer, " + format_size(g2) + " handles", "per_layer", per_layer);
  trow("interleaved, one " + format_size(per_layer_page) + " handle", "interleaved", interleaved);
  trow("interleaved, " + format_size(g2) + " handles", "interleaved_small", interleaved_small);
  const double ratio = gibs(interleaved) / gibs(per_layer);
  out["interleaved_over_per_layer_map_throughput"] = ratio;

  // Zero-page option: unmapped pages backed by a shared read-only zero handle.
  const PageCost zi =
      measure_pages(backend, g, kv::KvLayout::kInterleaved, g2, cfg.map_pages * 8, 5, true);
  TextTable zero({"Zero-page option (interleaved, " + format_size(g2) + ")", "map (us/page)",
                  "unmap (us/page)"});
  zero.add_row({"off", fixed(interleaved_small.map_us), fixed(interleaved_small.unmap_us)});
  zero.add_row({"on", fixed(zi.map_us), fixed(zi.unmap_us)});
  out["zero_page_map_us_per_page"] = zi.map_us;
  out["zero_page_unmap_us_per_page"] = zi.unmap_us;

  if (cfg.json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::printf(
      "=== Allocation Benchmark ===\nBackend              : %s\nGeometry             : %s\n"
      "Hot iterations       : %d (cold allocs during them: %llu)\n\n",
      backend->describe().c_str(), g.describe().c_str(), cfg.iters,
      static_cast<unsigned long long>(hot_cold));
  std::printf("%s\n%s", lat.render().c_str(), tput.render().c_str());
  std::printf("Interleaved / per-layer mapping throughput: x%.1f\n\n%s", ratio,
              zero.render().c_str());
}

void register_bench_alloc(CommandGroups& groups) {
  auto cfg = std::make_shared<AllocBenchConfig>();
  CLI::App* cmd = groups.bench.add_subcommand("alloc", "Block alloc/free latency, hot and cold");
  cmd->add_option("--backend", cfg->backend, "auto|host|cuda")->capture_default_str();
  cmd->add_option("--device", cfg->device, "CUDA device ordinal")->capture_default_str();
  cmd->add_option("--iters", cfg->iters, "hot alloc+free pairs")
      ->capture_default_str()
      ->check(integer_in(1, 10000000));
  cmd->add_option("--cold-iters", cfg->cold_iters, "cold allocations")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  cmd->add_option("--map-pages", cfg->map_pages, "logical pages per throughput round")
      ->capture_default_str()
      ->check(integer_in(1, 64));
  cmd->add_option("--num-layers", cfg->num_layers, "layers")
      ->capture_default_str()
      ->check(integer_in(1, 1024));
  cmd->add_option("--kv-heads", cfg->kv_heads, "KV heads")
      ->capture_default_str()
      ->check(integer_in(1, 1024));
  cmd->add_option("--head-dim", cfg->head_dim, "head dimension")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--block-size", cfg->block_size, "tokens per block")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_flag("--json", cfg->json, "print one JSON object");
  cmd->callback([cfg] { run_alloc_bench(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_bench_alloc);

}  // namespace kvpager::cli

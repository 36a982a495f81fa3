// kvpager demo: an elastic KV cache serving a synthetic, bursty request stream. Mapped memory
// follows the load up during bursts and back down between them; a summary ends the run.
// Runs on the CUDA backend when a GPU is present, on the host backend otherwise.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>
#include <thread>

#include "command_registry.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/kv/kv_cache.hpp"

namespace kvpager::cli {
namespace {

struct DemoConfig {
  std::string backend = "auto";
  std::string layout = "interleaved";
  double duration_s = 12;
  double tick_ms = 50;
  int bursts = 3;
  double peak_rate = 40;  // requests per second at a burst's peak
  double idle_rate = 1;
  std::string capacity = "4GiB";  // virtual KV capacity
  std::string limit;              // mapped-memory limit (empty: none)
  unsigned seed = 1;
};

struct Request {
  std::vector<BlockId> blocks;
  uint32_t tokens = 0;
  uint32_t remaining_output = 0;
};

std::string bar(double fraction, int width) {
  const int n = std::clamp(static_cast<int>(std::lround(fraction * width)), 0, width);
  return std::string(static_cast<size_t>(n), '#') + std::string(static_cast<size_t>(width - n), '.');
}

void run_demo(const DemoConfig& cfg) {
  vmm::BackendConfig bc = vmm::backend_config_from_env();
  bc.choice = vmm::parse_backend_choice(cfg.backend);
  auto backend = vmm::make_backend(bc);

  kv::KvCacheConfig kc;
  kc.geometry = {32, 8, 128, 2, 16, kv::KvKind::kKeyValue};  // Llama-3.1-8B, bf16
  kc.layout = kv::parse_layout(cfg.layout);
  kc.num_blocks = parse_size(cfg.capacity) / kc.geometry.block_bytes_all_layers();
  kc.limit_bytes = cfg.limit.empty() ? 0 : parse_size(cfg.limit);
  kc.reserve_pages = 2;
  kc.max_idle_pages = 8;
  kc = kv::kv_cache_config_from_env(kc);
  kv::KvCache cache(backend, kc);
  const kv::KvCacheStats s0 = cache.stats();
  const bool host = backend->kind() == vmm::BackendKind::kHost;
  const kv::TensorView layer0 = cache.tensor(0, 0);

  std::printf("kvpager demo: elastic KV cache on %s\n", backend->describe().c_str());
  std::printf("model shape: %s, layout %s, %s per page, virtual %s (%llu blocks)%s\n\n",
              kc.geometry.describe().c_str(), kv::layout_name(kc.layout),
              format_size(s0.page_bytes).c_str(), format_size(s0.virtual_bytes).c_str(),
              static_cast<unsigned long long>(s0.num_blocks),
              kc.limit_bytes ? (", limit " + format_size(kc.limit_bytes)).c_str() : "");

  std::mt19937 rng(cfg.seed);
  std::uniform_int_distribution<uint32_t> prompt_len(256, 2048), output_len(64, 512);
  const uint32_t bs = kc.geometry.block_size;
  const uint32_t tokens_per_tick = 16;  // decode steps per tick per request
  std::vector<Request> active;
  std::deque<Request> waiting;
  std::vector<double> alloc_us;
  uint64_t finished = 0, admitted = 0, refused = 0, peak_mapped = 0;
  const auto start = std::chrono::steady_clock::now();
  const int ticks = static_cast<int>(cfg.duration_s * 1000 / cfg.tick_ms);
  double arrivals = 0;
  const double scale = static_cast<double>(s0.virtual_bytes);  // bar: mapped / virtual

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
        std::memset(reinterpret_cast<void*>(layer0.base + into[i].value * layer0.block_stride_bytes),
                    0x11, 64);
      }
    }
    return true;
  };

  for (int tick = 0; tick < ticks; ++tick) {
    const double t = tick * cfg.tick_ms / 1000.0;
    // Bursty arrival rate: `bursts` raised-cosine peaks over the first 80 % of the run.
    const double phase = std::fmod(t / (cfg.duration_s * 0.8) * cfg.bursts, 1.0);
    const bool in_run = t < cfg.duration_s * 0.8;
    const double burst = in_run ? std::pow(std::max(0.0, std::sin(phase * M_PI)), 4) : 0.0;
    arrivals += (cfg.idle_rate + (cfg.peak_rate - cfg.idle_rate) * burst) * cfg.tick_ms / 1000.0;
    if (!in_run) arrivals = std::min(arrivals, 0.0);
    while (arrivals >= 1) {
      arrivals -= 1;
      Request r;
      r.tokens = prompt_len(rng);
      r.remaining_output = output_len(rng);
      waiting.push_back(std::move(r));
    }
    // Admit waiting requests (prefill) while memory allows.
    while (!waiting.empty()) {
      Request& r = waiting.front();
      if (!try_alloc((r.tokens + bs - 1) / bs, r.blocks)) {
        ++refused;
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
        ++i;  // stalled this tick: memory full
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
    const kv::KvCacheStats s = cache.stats();
    peak_mapped = std::max(peak_mapped, s.mapped_bytes);
    if (tick % std::max(1, static_cast<int>(500 / cfg.tick_ms)) == 0) {
      const double frac = static_cast<double>(s.mapped_bytes) / scale;
      std::printf("t=%5.1fs  active %4zu  waiting %4zu  in use %7s  mapped %10s  |%s|\n", t,
                  active.size(), waiting.size(),
                  format_size(s.blocks_in_use * kc.geometry.block_bytes_all_layers()).c_str(),
                  format_size(s.mapped_bytes).c_str(), bar(frac, 30).c_str());
      std::fflush(stdout);
    }
    std::this_thread::sleep_until(start + std::chrono::microseconds(
                                              static_cast<int64_t>((tick + 1) * cfg.tick_ms * 1000)));
  }
  // Drain: finish what is running, then trim.
  for (auto& r : active) cache.free(r.blocks);
  // Idle: the mapper unmaps free pages beyond max_idle_pages (give it up to a second).
  for (int i = 0; i < 100 && cache.stats().free_pages > kc.max_idle_pages; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const uint64_t idle_mapped = cache.mapped_bytes();
  cache.trim();
  const kv::KvCacheStats end = cache.stats();
  const LatencySummary a = summarize(alloc_us);
  std::printf("\n=== demo summary ===\n");
  std::printf("requests admitted / finished   : %llu / %llu (%llu admissions deferred for memory)\n",
              static_cast<unsigned long long>(admitted), static_cast<unsigned long long>(finished),
              static_cast<unsigned long long>(refused));
  std::printf("peak mapped                    : %s\n", format_size(peak_mapped).c_str());
  std::printf("mapped when idle (idle pages)  : %s\n", format_size(idle_mapped).c_str());
  std::printf("mapped after trim              : %s (null block page)\n",
              format_size(end.mapped_bytes).c_str());
  std::printf("pages mapped / unmapped        : %llu / %llu\n",
              static_cast<unsigned long long>(end.pages_mapped_total),
              static_cast<unsigned long long>(end.pages_unmapped_total));
  std::printf("allocs / cold allocs           : %llu / %llu\n",
              static_cast<unsigned long long>(end.alloc_calls),
              static_cast<unsigned long long>(end.cold_allocs));
  std::printf("alloc latency p50 / p99        : %.2f / %.2f us\n", a.p50, a.p99);
}

void register_demo(CommandGroups& groups) {
  auto cfg = std::make_shared<DemoConfig>();
  CLI::App* cmd = groups.root.add_subcommand(
      "demo", "Elastic KV cache under a bursty synthetic request stream");
  cmd->add_option("--backend", cfg->backend, "auto|host|cuda")->capture_default_str();
  cmd->add_option("--layout", cfg->layout, "per-layer|interleaved")->capture_default_str();
  cmd->add_option("--duration", cfg->duration_s, "seconds")->capture_default_str()
      ->check(CLI::Range(1.0, 600.0));
  cmd->add_option("--bursts", cfg->bursts, "load peaks during the run")->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--peak-rate", cfg->peak_rate, "requests/s at a peak")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--capacity", cfg->capacity, "virtual KV capacity (e.g. 4GiB)")
      ->capture_default_str();
  cmd->add_option("--limit", cfg->limit, "mapped-memory limit (e.g. 2GiB)");
  cmd->add_option("--seed", cfg->seed, "random seed")->capture_default_str();
  cmd->callback([cfg] { run_demo(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_demo);

}  // namespace kvpager::cli

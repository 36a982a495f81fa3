// kvpager bench vmm: raw backend operation latencies (create, map, set access, unmap, release,
// reserve; cuMemAlloc for comparison on CUDA), a map/unmap loop over pre-created handles, and a
// handle-size sweep giving the cost per 2 MiB mapped, as shared/ANCHORS.md's first tables.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <vector>

#include "bench/bench_clock.hpp"
#include "bench/text_table.hpp"
#include "cli_checks.hpp"
#include "command_registry.hpp"
#include "kvpager/common/latency_stats.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/vmm/backend.hpp"
#include "kvpager/vmm/cuda_backend.hpp"
#include "kvpager/vmm/cuda_driver.hpp"

namespace kvpager::cli {
namespace {

struct VmmBenchConfig {
  std::string backend = "auto";
  int device = 0;
  int iters = 200;
  int loop_pages = 100;
  int loop_iters = 20;
  std::vector<int> sweep_mib = {2, 4, 8, 16, 32, 64, 128, 256, 512};
  bool shareable = false;
  bool json = false;
};

struct OpSamples {
  std::vector<double> create, map, set_access, unmap, release;
};

void run_vmm_bench(const VmmBenchConfig& cfg) {
  vmm::BackendConfig bc = vmm::backend_config_from_env();
  bc.choice = vmm::parse_backend_choice(cfg.backend);
  bc.device = cfg.device;
  bc.cuda_shareable_handles = cfg.shareable;
  auto backend = vmm::make_backend(bc);
  const size_t g = backend->granularity();
  const size_t two_mib = 2 * MiB;
  const size_t base = std::max(g, two_mib);
  nlohmann::json out;
  out["backend"] = backend->describe();
  out["iters"] = cfg.iters;
  out["shareable_handles"] = cfg.shareable;

  // 1. Single-handle operations, 2 MiB (or the granularity if larger).
  const size_t span = base * static_cast<size_t>(std::max(cfg.loop_pages, 4));
  double reserve_us = 0;
  uintptr_t va = 0;
  const uint64_t big = 8 * GiB;
  {
    uintptr_t tmp = 0;
    reserve_us = time_us([&] { tmp = backend->reserve(big, base); });
    backend->free_reservation(tmp, big);
  }
  va = backend->reserve(span, base);
  // Warm-up: the first few hundred VMM calls of a process run slower (driver and GPU state).
  for (int i = 0; i < 200; ++i) {
    vmm::PhysicalHandle h = backend->create(base);
    backend->map(va, base, h, 0);
    backend->set_access(va, base, vmm::Access::kReadWrite);
    backend->unmap(va, base);
    backend->release(h);
  }
  OpSamples s;
  for (int i = 0; i < cfg.iters + 5; ++i) {
    vmm::PhysicalHandle h;
    const double c = time_us([&] { h = backend->create(base); });
    const double m = time_us([&] { backend->map(va, base, h, 0); });
    const double a = time_us([&] { backend->set_access(va, base, vmm::Access::kReadWrite); });
    const double u = time_us([&] { backend->unmap(va, base); });
    const double r = time_us([&] { backend->release(h); });
    if (i < 5) continue;  // warm-up
    s.create.push_back(c);
    s.map.push_back(m);
    s.set_access.push_back(a);
    s.unmap.push_back(u);
    s.release.push_back(r);
  }
  std::vector<double> alloc_samples;
  if (backend->kind() == vmm::BackendKind::kCuda) {
    const auto& d = vmm::CudaDriver::get();
    static_cast<vmm::CudaBackend&>(*backend).make_current();
    for (int i = 0; i < cfg.iters + 5; ++i) {
      CUdeviceptr p = 0;
      const double t = time_us([&] { d.check(d.cuMemAlloc(&p, base), "cuMemAlloc"); });
      d.check(d.cuMemFree(p), "cuMemFree");
      if (i >= 5) alloc_samples.push_back(t);
    }
  }

  TextTable ops({"Operation (" + format_size(base) + " handles)", "mean (us)", "p50 (us)",
                 "p99 (us)", "max (us)"});
  auto add = [&](const std::string& name, const std::string& key, const std::vector<double>& v) {
    const LatencySummary sum = summarize(v);
    ops.add_row({name, fixed(sum.mean), fixed(sum.p50), fixed(sum.p99), fixed(sum.max)});
    out[key + "_mean_us"] = sum.mean;
    out[key + "_p50_us"] = sum.p50;
    out[key + "_p99_us"] = sum.p99;
    out[key + "_max_us"] = sum.max;
  };
  add("create", "create", s.create);
  add("map", "map", s.map);
  add("set access", "set_access", s.set_access);
  add("unmap", "unmap", s.unmap);
  add("release", "release", s.release);
  if (!alloc_samples.empty()) add("cuMemAlloc (comparison)", "cu_mem_alloc", alloc_samples);
  ops.add_separator();
  ops.add_row({"reserve 8 GiB (once)", fixed(reserve_us), "", "", ""});
  out["reserve_8gib_us"] = reserve_us;

  // 2. Pre-created handles: map + set access all, then unmap all, in a loop.
  std::vector<vmm::PhysicalHandle> handles(static_cast<size_t>(cfg.loop_pages));
  for (auto& h : handles) h = backend->create(base);
  std::vector<double> loop_map, loop_unmap;
  for (int it = 0; it < cfg.loop_iters + 1; ++it) {
    const double m = time_us([&] {
      for (size_t i = 0; i < handles.size(); ++i) {
        backend->map(va + i * base, base, handles[i], 0);
        backend->set_access(va + i * base, base, vmm::Access::kReadWrite);
      }
    });
    const double u = time_us([&] {
      for (size_t i = 0; i < handles.size(); ++i) backend->unmap(va + i * base, base);
    });
    if (it == 0) continue;
    loop_map.push_back(m / 1000.0);
    loop_unmap.push_back(u / 1000.0);
  }
  for (auto h : handles) backend->release(h);
  backend->free_reservation(va, span);
  const LatencySummary lm = summarize(loop_map), lu = summarize(loop_unmap);
  const double pages = static_cast<double>(cfg.loop_pages);
  TextTable loop(
      {std::to_string(cfg.loop_pages) + " pre-created handles, loop", "map + set access", "unmap"});
  loop.add_row({"mean per iteration (ms)", fixed(lm.mean, 3), fixed(lu.mean, 3)});
  loop.add_row(
      {"mean per page (us)", fixed(lm.mean * 1000 / pages), fixed(lu.mean * 1000 / pages)});
  out["loop_map_set_access_per_iter_ms"] = lm.mean;
  out["loop_unmap_per_iter_ms"] = lu.mean;
  out["loop_map_set_access_per_page_us"] = lm.mean * 1000 / pages;
  out["loop_unmap_per_page_us"] = lu.mean * 1000 / pages;

  // 3. Handle-size sweep: cost per 2 MiB mapped.
  TextTable sweep(
      {"handle size (us per 2 MiB)", "create", "map", "set access", "unmap", "release"});
  for (int mib : cfg.sweep_mib) {
    const size_t bytes = static_cast<size_t>(mib) * MiB;
    if (bytes % g != 0) continue;
    const int n = std::max(5, std::min(cfg.iters, static_cast<int>((4 * GiB) / bytes)));
    const uintptr_t sva = backend->reserve(bytes, bytes);
    OpSamples w;
    for (int i = 0; i < n + 2; ++i) {
      vmm::PhysicalHandle h;
      const double c = time_us([&] { h = backend->create(bytes); });
      const double m = time_us([&] { backend->map(sva, bytes, h, 0); });
      const double a = time_us([&] { backend->set_access(sva, bytes, vmm::Access::kReadWrite); });
      const double u = time_us([&] { backend->unmap(sva, bytes); });
      const double r = time_us([&] { backend->release(h); });
      if (i < 2) continue;
      w.create.push_back(c);
      w.map.push_back(m);
      w.set_access.push_back(a);
      w.unmap.push_back(u);
      w.release.push_back(r);
    }
    backend->free_reservation(sva, bytes);
    const double per = static_cast<double>(bytes) / static_cast<double>(two_mib);
    const double vc = summarize(w.create).mean / per, vm = summarize(w.map).mean / per,
                 va2 = summarize(w.set_access).mean / per, vu = summarize(w.unmap).mean / per,
                 vr = summarize(w.release).mean / per;
    sweep.add_row(
        {std::to_string(mib) + " MiB", fixed(vc), fixed(vm), fixed(va2), fixed(vu), fixed(vr)});
    const std::string k = "handle_" + std::to_string(mib) + "mib_";
    out[k + "create_us_per_2mib"] = vc;
    out[k + "map_us_per_2mib"] = vm;
    out[k + "set_access_us_per_2mib"] = va2;
    out[k + "unmap_us_per_2mib"] = vu;
    out[k + "release_us_per_2mib"] = vr;
    out[k + "map_set_access_unmap_us_per_handle"] =
        summarize(w.map).mean + summarize(w.set_access).mean + summarize(w.unmap).mean;
  }

  if (cfg.json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::printf("=== VMM Benchmark ===\nBackend              : %s\nIterations           : %d\n\n",
              backend->describe().c_str(), cfg.iters);
  std::printf("%s\n%s\n%s", ops.render().c_str(), loop.render().c_str(), sweep.render().c_str());
}

void register_bench_vmm(CommandGroups& groups) {
  auto cfg = std::make_shared<VmmBenchConfig>();
  CLI::App* cmd = groups.bench.add_subcommand("vmm", "Raw VMM backend operation latencies");
  cmd->add_option("--backend", cfg->backend, "auto|host|cuda")->capture_default_str();
  cmd->add_option("--device", cfg->device, "CUDA device ordinal")->capture_default_str();
  cmd->add_option("--iters", cfg->iters, "iterations per operation")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  cmd->add_option("--loop-pages", cfg->loop_pages, "handles in the map/unmap loop")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--loop-iters", cfg->loop_iters, "iterations of the loop")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  cmd->add_option("--sweep-mib", cfg->sweep_mib, "handle sizes (MiB) for the sweep, 1 to 65536")
      ->capture_default_str()
      ->check(integer_in(1, 65536));  // 0 divided by zero (issue 20)
  cmd->add_flag("--shareable", cfg->shareable,
                "CUDA: create handles exportable as POSIX fds (KVPAGER_SHAREABLE_HANDLES)");
  cmd->add_flag("--json", cfg->json, "print one JSON object");
  cmd->callback([cfg] { run_vmm_bench(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_bench_vmm);

}  // namespace kvpager::cli

// kvpager bench prepare-batch: one scheduling step's block-table update and attention-metadata
// pack, CPU path (host manager + one pinned H2D copy) against GPU path (one fused kernel, the
// step descriptor in its parameters), both timed until the metadata is ready on the GPU.
// Prints the seed's table (shared/seeds/004): Batch Size, Seq Len, CPU/GPU Update, Speedup,
// CPU/GPU Pack, Speedup, plus the per-step totals. The GPU Update/Pack columns time the split
// path (descriptor copy + update kernel, then the pack kernel) on a second instance, since the
// fused path has no phase boundary; GPU Ready is the fused path. GPU times come from CUDA
// events recorded before the host builds the descriptor and after the last kernel, so they
// include the host work; CPU times from the host clock and include waiting for the copy. All
// paths run the same deterministic workload and their final metadata is compared.
#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "bench/bench_clock.hpp"
#include "command_registry.hpp"
#include "kvpager/batch/block_table_manager.hpp"
#include "kvpager/batch/cpu_batch_preparer.hpp"
#include "kvpager/batch/cuda_resources.hpp"
#include "kvpager/batch/gpu_batch_preparer.hpp"
#include "kvpager/batch/synthetic_workload.hpp"
#include "kvpager/common/error.hpp"
#include "kvpager/common/latency_stats.hpp"

namespace kvpager::cli {
namespace {

using namespace kvpager::batch;

struct PrepareBatchBenchConfig {
  std::vector<int> batch_sizes{16, 32, 64, 128, 256};
  std::vector<int> seq_lens{128, 256, 512, 1024};
  int iterations = 100;
  int warmup = 10;
  std::vector<int> block_sizes{16};
  std::vector<std::string> modes{"decode"};
  std::string output;
  bool json = false;
  bool graph = false;
};

struct Samples {
  std::vector<double> cpu_update, cpu_pack, cpu_ready, gpu_update, gpu_pack, gpu_split_ready,
      gpu_ready, gpu_wall, graph_ready, tokens;
};

nlohmann::json summary_json(const std::vector<double>& v) {
  const LatencySummary s = summarize(v);
  return {{"mean", s.mean}, {"p50", s.p50}, {"p99", s.p99}, {"min", s.min}, {"max", s.max}};
}

double mean(const std::vector<double>& v) {
  return summarize(v).mean;
}

// Runs one (batch, seq_len) cell; times in microseconds.
nlohmann::json run_cell(const PrepareBatchBenchConfig& cfg, WorkloadMode mode, int block_size,
                        int batch, int seq_len) {
  WorkloadConfig w;
  w.mode = mode;
  w.batch = batch;
  w.seq_len = seq_len;
  w.block_size = block_size;
  w.steps = cfg.warmup + cfg.iterations;
  SyntheticWorkload cpu_work(w), gpu_work(w), split_work(w), graph_work(w);
  BlockTableManager manager(cpu_work.batch_config());
  CpuBatchPreparer cpu(manager);
  GpuBatchPreparer gpu(gpu_work.batch_config());
  GpuBatchPreparer split(split_work.batch_config());
  std::unique_ptr<GpuBatchPreparer> graph;
  if (cfg.graph) {
    graph = std::make_unique<GpuBatchPreparer>(graph_work.batch_config());
    graph->capture_graph();
  }
  while (!cpu_work.setup_done()) {  // untimed: bring every path to the steady state
    const Step& s = cpu_work.next_setup();
    cpu.update(s);
    cpu.pack(s);
    gpu.prepare(gpu_work.next_setup());
    split.update(split_work.next_setup());
    split.pack();
    if (graph) graph->prepare_graph(graph_work.next_setup());
  }
  cpu.synchronize();
  gpu.synchronize();
  split.synchronize();
  if (graph) graph->synchronize();

  CudaEvent e0(true), e1(true), s0(true), s1(true), s2(true), g0(true), g1(true);
  bool params = true;  // every fused step passed its descriptor as kernel parameters
  Samples s;
  for (int i = 0; i < cfg.warmup + cfg.iterations; ++i) {
    const bool keep = i >= cfg.warmup;
    // CPU path: host update, then pack + H2D, until the copy has landed.
    const Step& cs = cpu_work.next();
    const double t0 = now_us();
    cpu.update(cs);
    const double t1 = now_us();
    cpu.pack(cs);
    cpu.synchronize();
    const double t2 = now_us();
    // GPU path: events around validation + descriptor build + the fused kernel.
    const Step& gs = gpu_work.next();
    const double t3 = now_us();
    e0.record(gpu.stream());
    gpu.prepare(gs);
    e1.record(gpu.stream());
    e1.synchronize();
    const double t4 = now_us();
    params = params && gpu.last_descriptor_path() == DescriptorPath::kKernelParameters;
    // Split path, for the seed's update and pack columns: (descriptor build + H2D + update
    // kernel), then the pack kernel.
    const Step& ss = split_work.next();
    s0.record(split.stream());
    split.update(ss);
    s1.record(split.stream());
    split.pack();
    s2.record(split.stream());
    s2.synchronize();
    double graph_us = 0;
    if (graph) {
      const Step& ws = graph_work.next();
      g0.record(graph->stream());
      graph->prepare_graph(ws);
      g1.record(graph->stream());
      g1.synchronize();
      graph_us = 1000.0 * CudaEvent::elapsed_ms(g0, g1);
    }
    if (!keep) continue;
    s.cpu_update.push_back(t1 - t0);
    s.cpu_pack.push_back(t2 - t1);
    s.cpu_ready.push_back(t2 - t0);
    s.gpu_update.push_back(1000.0 * CudaEvent::elapsed_ms(s0, s1));
    s.gpu_pack.push_back(1000.0 * CudaEvent::elapsed_ms(s1, s2));
    s.gpu_split_ready.push_back(1000.0 * CudaEvent::elapsed_ms(s0, s2));
    s.gpu_ready.push_back(1000.0 * CudaEvent::elapsed_ms(e0, e1));
    s.gpu_wall.push_back(t4 - t3);
    if (graph) s.graph_ready.push_back(graph_us);
    s.tokens.push_back(static_cast<double>(manager.last_totals().num_tokens));
  }
  gpu.synchronize();  // throws if the device ran out of blocks
  const MetadataSnapshot want = snapshot(cpu.host_metadata());
  const MetadataSnapshot got = gpu.download();
  std::string diff = got.first_difference(want);
  if (diff.empty()) {
    const std::string d = split.download().first_difference(want);
    if (!d.empty()) diff = "split path: " + d;
  }
  if (diff.empty() && graph) {
    const MetadataSnapshot replayed = graph->download();
    const std::string d = replayed.first_difference(want);
    if (!d.empty()) diff = "graph replay: " + d;
  }

  nlohmann::json cell = {
      {"mode", to_string(mode)},
      {"block_size", block_size},
      {"batch_size", batch},
      {"seq_len", seq_len},
      {"mean_new_tokens_per_step", mean(s.tokens)},
      {"cpu_update_us", summary_json(s.cpu_update)},
      {"cpu_pack_us", summary_json(s.cpu_pack)},
      {"cpu_ready_us", summary_json(s.cpu_ready)},
      {"gpu_update_us", summary_json(s.gpu_update)},
      {"gpu_pack_us", summary_json(s.gpu_pack)},
      {"gpu_ready_us", summary_json(s.gpu_ready)},
      {"gpu_split_ready_us", summary_json(s.gpu_split_ready)},
      {"gpu_descriptor_in_params", params},
      {"gpu_ready_wall_us", summary_json(s.gpu_wall)},
      {"update_speedup", mean(s.cpu_update) / mean(s.gpu_update)},
      {"pack_speedup", mean(s.cpu_pack) / mean(s.gpu_pack)},
      {"outputs_identical", diff.empty()},
  };
  if (graph) cell["gpu_graph_ready_us"] = summary_json(s.graph_ready);
  if (!diff.empty()) cell["first_difference"] = diff;
  return cell;
}

std::string device_name() {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  return prop.name;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The seed's table for the cells of one (mode, block size), plus the per-step totals.
void print_table(const nlohmann::json& doc, const std::string& mode, int block_size, bool graph) {
  const std::string rule(graph ? 138 : 124, '=');
  const std::string thin(rule.size(), '-');
  std::printf("%s\n", rule.c_str());
  std::printf(
      "KV Cache Management Benchmark: CPU vs GPU  (mode %s, block size %d, %d iterations, %s)\n",
      mode.c_str(), block_size, doc["iterations"].get<int>(),
      doc["device"].get<std::string>().c_str());
  std::printf("%s\n", rule.c_str());
  std::printf("%-12s %-9s %-15s %-15s %-9s %-13s %-13s %-9s %-15s %-15s", "Batch Size", "Seq Len",
              "CPU Update (ms)", "GPU Update (ms)", "Speedup", "CPU Pack (ms)", "GPU Pack (ms)",
              "Speedup", "CPU Ready (us)", "GPU Ready (us)");
  if (graph) std::printf(" %-13s", "Graph (us)");
  std::printf("\n%s\n", thin.c_str());
  for (const auto& c : doc["results"]) {
    if (c["mode"] != mode || c["block_size"] != block_size) continue;
    auto ms = [&](const char* key) { return c[key]["mean"].get<double>() / 1000.0; };
    auto us = [&](const char* key) { return c[key]["mean"].get<double>(); };
    std::printf("%-12d %-9d %-15.4f %-15.4f %-9.2f %-13.4f %-13.4f %-9.2f %-15.1f %-15.1f",
                c["batch_size"].get<int>(), c["seq_len"].get<int>(), ms("cpu_update_us"),
                ms("gpu_update_us"), c["update_speedup"].get<double>(), ms("cpu_pack_us"),
                ms("gpu_pack_us"), c["pack_speedup"].get<double>(), us("cpu_ready_us"),
                us("gpu_ready_us"));
    if (graph) std::printf(" %-13.1f", us("gpu_graph_ready_us"));
    if (!c["outputs_identical"].get<bool>()) std::printf("  OUTPUTS DIFFER");
    std::printf("\n");
  }
  std::printf("%s\n", thin.c_str());
}

void run_prepare_batch_bench(const PrepareBatchBenchConfig& cfg) {
  std::vector<WorkloadMode> modes;
  for (const std::string& m : cfg.modes) modes.push_back(parse_workload_mode(m));
  if (cfg.iterations < 1 || cfg.warmup < 0)
    throw InvalidArgument("--iterations must be >= 1 and --warmup >= 0");
  for (int b : cfg.batch_sizes)
    if (b < 1) throw InvalidArgument("--batch-sizes must be >= 1");
  for (int l : cfg.seq_lens)
    if (l < 1) throw InvalidArgument("--seq-lens must be >= 1");
  for (int bs : cfg.block_sizes) {
    BatchConfig probe;
    probe.block_size = bs;
    probe.validate();  // InvalidArgument for a bad --block-size
  }
  if (!gpu_kernels_built())
    throw Error(
        "bench prepare-batch: this kvpager was built without CUDA kernels (no nvcc); "
        "no numbers to report");
  if (!cuda_device_present())
    throw Error(
        "bench prepare-batch needs a CUDA device and none is present; no numbers to "
        "report (the CPU path alone is covered by the tests)");

  nlohmann::json doc = {
      {"benchmark", "prepare-batch"},      {"device", device_name()}, {"date", utc_now()},
      {"iterations", cfg.iterations},      {"warmup", cfg.warmup},    {"graph", cfg.graph},
      {"results", nlohmann::json::array()}};
  bool identical = true;
  for (int bs : cfg.block_sizes) {
    for (WorkloadMode mode : modes) {
      for (int b : cfg.batch_sizes) {
        for (int l : cfg.seq_lens) {
          nlohmann::json cell = run_cell(cfg, mode, bs, b, l);
          identical = identical && cell["outputs_identical"].get<bool>();
          doc["results"].push_back(std::move(cell));
        }
      }
    }
  }
  if (!cfg.output.empty()) {
    std::ofstream f(cfg.output);
    if (!f) throw Error("cannot write " + cfg.output);
    f << doc.dump(2) << "\n";
  }
  if (cfg.json) {
    std::cout << doc.dump(2) << std::endl;
  } else {
    for (int bs : cfg.block_sizes)
      for (WorkloadMode mode : modes) print_table(doc, to_string(mode), bs, cfg.graph);
    std::printf(
        "CPU: host update; pack into pinned memory + one H2D copy, waited for; Ready = update + "
        "pack. GPU Ready: CUDA events around validation + descriptor build + one fused kernel "
        "(descriptor as kernel parameters). GPU Update/Pack: the split path (descriptor H2D + "
        "update kernel, then pack kernel), timed on a second instance (JSON: "
        "gpu_split_ready_us). Ready = metadata on the GPU. Means over the timed steps.\n");
  }
  if (!identical) {
    std::fprintf(stderr, "kvpager: error: CPU and GPU metadata differ (see first_difference)\n");
    throw ExitStatus{kExitFailure};
  }
}

void register_bench_prepare_batch(CommandGroups& groups) {
  auto cfg = std::make_shared<PrepareBatchBenchConfig>();
  CLI::App* cmd = groups.bench.add_subcommand(
      "prepare-batch", "Block-table update + attention-metadata pack per step, CPU vs GPU");
  cmd->add_option("--batch-sizes", cfg->batch_sizes, "sequences per step")->capture_default_str();
  cmd->add_option("--seq-lens", cfg->seq_lens, "sequence (prompt) lengths")->capture_default_str();
  cmd->add_option("--iterations", cfg->iterations, "timed steps per cell")->capture_default_str();
  cmd->add_option("--warmup", cfg->warmup, "untimed steps per cell")->capture_default_str();
  cmd->add_option("--block-size", cfg->block_sizes, "tokens per KV block (1 = token pool)")
      ->capture_default_str();
  cmd->add_option("--mode", cfg->modes, "decode | prefill | mixed (one or more)")
      ->capture_default_str();
  cmd->add_option("--output", cfg->output, "also write the results as JSON to this file");
  cmd->add_flag("--json", cfg->json, "print JSON instead of the table");
  cmd->add_flag("--graph", cfg->graph, "also time the GPU path replayed as a CUDA graph");
  cmd->callback([cfg] { run_prepare_batch_bench(*cfg); });
}

}  // namespace

KVPAGER_REGISTER_COMMAND(register_bench_prepare_batch);

}  // namespace kvpager::cli

#include "kvbench/kvbench_options.hpp"

#include <glob.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <memory>

#include "kvpager/common/error.hpp"
#include "kvpager/common/units.hpp"
#include "kvpager/model/catalogue.hpp"

namespace kvpager::cli {

namespace {

int64_t parse_signed(const std::string& flag, const std::string& text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end || text.empty()) {
    throw InvalidArgument(flag + " " + text + ": expected an integer");
  }
  return v;
}

uint64_t parse_count(const std::string& flag, const std::string& text, bool allow_zero) {
  const int64_t v = parse_signed(flag, text);
  if (v < 0 || (v == 0 && !allow_zero)) {
    throw InvalidArgument(flag + " " + text + ": must be a positive integer");
  }
  return static_cast<uint64_t>(v);
}

uint64_t parse_bytes(const std::string& flag, const std::string& text) {
  uint64_t v = 0;
  try {
    v = parse_size(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(flag + " " + text + ": " + e.what());
  }
  if (v == 0) throw InvalidArgument(flag + " " + text + ": must be positive");
  return v;
}

void opt_int(CLI::App& app, const char* name, std::optional<int64_t>& out, const char* help) {
  app.add_option_function<std::string>(
      name, [&out, name](const std::string& s) { out = parse_signed(name, s); }, help);
}

void count(CLI::App& app, const char* name, uint64_t& out, const char* help,
           bool allow_zero = false) {
  app.add_option_function<std::string>(
         name,
         [&out, name, allow_zero](const std::string& s) { out = parse_count(name, s, allow_zero); },
         help)
      ->default_str(std::to_string(out));
}

void bytes(CLI::App& app, const char* name, uint64_t& out, const char* help) {
  app.add_option_function<std::string>(
         name, [&out, name](const std::string& s) { out = parse_bytes(name, s); }, help)
      ->default_str(std::to_string(out));
}

}  // namespace

void add_common_args(CLI::App& app, KvbenchInputs& in) {
  app.add_option("--model", in.model, "Model architecture: YAML file or catalogue name")
      ->required();
  app.add_option("--model_config", in.model_config, "Model config YAML file");
  app.add_option("--model_configs", in.model_configs,
                 "Model config YAML files (glob pattern, quote it)");
  auto& o = in.overrides;
  opt_int(app, "--pp", o.pp, "Pipeline parallelism size");
  opt_int(app, "--tp", o.tp, "Tensor parallelism size");
  opt_int(app, "--isl", o.isl, "Input sequence length");
  opt_int(app, "--osl", o.osl, "Output sequence length");
  opt_int(app, "--num_requests", o.num_requests, "Number of requests");
  opt_int(app, "--page_size", o.page_size, "Page size (tokens)");
  app.add_option_function<std::string>(
      "--access_pattern", [&o](const std::string& s) { o.access_pattern = s; },
      "Access pattern [block, layer]");
}

void add_bench_args(CLI::App& app, BenchArgs& args, bool with_endpoints) {
  auto& x = args.xfer;
  if (with_endpoints) {
    app.add_option_function<std::string>(
        "--source", [&args](const std::string& s) { args.source = s; },
        "Source of the descriptors [file, memory, gpu] (default: file)");
    app.add_option_function<std::string>(
        "--destination", [&args](const std::string& s) { args.destination = s; },
        "Destination of the descriptors [file, memory, gpu] (default: memory)");
  }
  app.add_option("--backend", x.backend, "Transfer backend [UCX, UCX_MO, GDS, POSIX, CUDA]")
      ->capture_default_str();
  app.add_option("--worker_type", x.worker_type, "Worker [nixl, nvshmem]")->capture_default_str();
  app.add_option("--initiator_seg_type", x.initiator_seg_type, "Initiator segment [DRAM, VRAM]")
      ->capture_default_str();
  app.add_option("--target_seg_type", x.target_seg_type, "Target segment [DRAM, VRAM, FILE]")
      ->capture_default_str();
  app.add_option("--scheme", x.scheme, "Scheme [pairwise, manytoone, onetomany, tp]")
      ->capture_default_str();
  app.add_option("--mode", x.mode, "Process mode [SG, MG]")->capture_default_str();
  app.add_option("--op_type", x.op_type, "Operation [READ, WRITE]")->capture_default_str();
  app.add_flag("--check_consistency", x.check_consistency, "Verify every byte moved");
  bytes(app, "--total_buffer_size", x.total_buffer_size, "Total buffer size in bytes (8GiB)");
  bytes(app, "--start_block_size", x.start_block_size, "Starting block size in bytes (4KiB)");
  bytes(app, "--max_block_size", x.max_block_size, "Maximum block size in bytes (64MiB)");
  count(app, "--start_batch_size", x.start_batch_size, "Starting batch size");
  count(app, "--max_batch_size", x.max_batch_size, "Maximum batch size");
  count(app, "--num_iter", x.num_iter, "Iterations");
  count(app, "--warmup_iter", x.warmup_iter, "Warm-up iterations", /*allow_zero=*/true);
  count(app, "--num_threads", x.num_threads, "Threads");
  count(app, "--num_initiator_dev", x.num_initiator_dev, "Devices (ranks) that initiate");
  count(app, "--num_target_dev", x.num_target_dev, "Devices (ranks) that are targets");
  app.add_flag("--enable_pt", x.enable_pt, "Enable progress thread");
  app.add_option("--device_list", x.device_list, "Comma-separated device names (all)")
      ->capture_default_str();
  app.add_option("--runtime_type", x.runtime_type, "Runtime [ETCD]")->capture_default_str();
  app.add_option("--etcd-endpoints,--etcd_endpoints,--etcd-endpoint", x.etcd_endpoints,
                 "etcd URL for coordination")
      ->capture_default_str();
  app.add_flag("--storage_enable_direct", x.storage_enable_direct, "O_DIRECT for file IO");
  app.add_option("--gds_filepath", x.gds_filepath, "File (or folder) for GDS/POSIX IO");
  app.add_flag("--enable_vmm", x.enable_vmm, "VMM allocation when DRAM is requested");
  app.add_option("--benchmark_group", x.benchmark_group, "etcd namespace of this run (kvpager)")
      ->capture_default_str();
  app.add_option_function<std::string>(
      "--rank",
      [&x](const std::string& s) {
        const uint64_t r = parse_count("--rank", s, /*allow_zero=*/true);
        if (r > UINT32_MAX) throw InvalidArgument("--rank " + s + ": too large");
        x.rank = static_cast<uint32_t>(r);
      },
      "Take this rank (kvpager; default: first free)");
  app.add_flag("--spawn_local", x.spawn_local, "Start every rank on this host (kvpager)");
  app.add_flag("--cuda_ipc", x.cuda_ipc,
               "CUDA: target in a second process through exported VMM handles (kvpager)");
  count(app, "--peer_timeout", x.peer_timeout_s, "Seconds to wait for peers (kvpager)");
  app.add_option("--copy_engine,--copy-engine", x.copy_engine,
                 "CUDA: how a batch is copied [auto, per-block, batch, kernel] (kvpager)")
      ->capture_default_str();
}

model::ModelArchitecture load_model(const KvbenchInputs& in) {
  return model::find_architecture(in.model, model::catalogue_dirs());
}

std::vector<LoadedConfig> load_configs(const KvbenchInputs& in,
                                       const model::ModelArchitecture& arch) {
  std::vector<std::string> files;
  if (!in.model_config.empty()) files.push_back(in.model_config);
  if (!in.model_configs.empty()) {
    glob_t g{};
    const int rc = ::glob(in.model_configs.c_str(), 0, nullptr, &g);
    std::unique_ptr<glob_t, void (*)(glob_t*)> guard(&g, ::globfree);
    if (rc == GLOB_NOMATCH) {
      throw InvalidArgument("--model_configs " + in.model_configs + ": no file matches");
    }
    if (rc != 0) throw InvalidArgument("--model_configs " + in.model_configs + ": glob failed");
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  }
  if (files.empty()) throw InvalidArgument("--model_config or --model_configs is required");
  std::vector<std::string> unique;
  for (auto& f : files) {
    if (std::find(unique.begin(), unique.end(), f) == unique.end()) unique.push_back(f);
  }
  std::vector<LoadedConfig> out;
  for (const auto& f : unique) {
    LoadedConfig lc;
    lc.path = f;
    lc.config = model::load_model_config(f);
    model::apply_overrides(lc.config, in.overrides);
    lc.geometry = model::transfer_geometry(arch, lc.config);
    out.push_back(std::move(lc));
  }
  return out;
}

transfer::Endpoints endpoints_for(const BenchArgs& args, const model::ModelConfig& config) {
  transfer::Endpoints e;
  if (config.system.source) e.source = *config.system.source;
  if (config.system.destination) e.destination = *config.system.destination;
  if (args.source) e.source = *args.source;
  if (args.destination) e.destination = *args.destination;
  return e;
}

std::string kvbench_format_bytes(uint64_t bytes) {
  static const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int power = 0;
  long double scale = 1;
  while (power < 4 && bytes >= scale * 1024) {
    scale *= 1024;
    ++power;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", static_cast<double>(bytes / scale));
  std::string s = buf;
  while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();
  return s + " " + units[power];
}

}  // namespace kvpager::cli

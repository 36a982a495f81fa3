#pragma once
// The argument groups kvbench's commands share (the seed's "common", "CLI override" and
// "shared benchmark" groups), and loading the model and configs they name. Used by
// kvbench_{plan,profile,kvcache,iosize}.cpp and bench_xfer.cpp.
#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

#include "kvpager/bench/transfer/xfer_config.hpp"
#include "kvpager/model/architecture.hpp"
#include "kvpager/model/kv_sizing.hpp"
#include "kvpager/model/model_config.hpp"

namespace kvpager::cli {

struct KvbenchInputs {
  std::string model;
  std::string model_config;
  std::string model_configs;  // glob
  model::ConfigOverrides overrides;
};

struct BenchArgs {
  transfer::XferConfig xfer;
  std::optional<std::string> source, destination;
};

// --model --model_config --model_configs, and the override group.
void add_common_args(CLI::App& app, KvbenchInputs& in);
// Every nixlbench flag (and kvpager's additions) into args.xfer; --source/--destination when
// `with_endpoints`. Numbers are parsed strictly; sizes take suffixes (4K, 64MiB, 8GiB).
void add_bench_args(CLI::App& app, BenchArgs& args, bool with_endpoints);

struct LoadedConfig {
  std::string path;  // as given (or as the glob expanded it)
  model::ModelConfig config;
  model::TransferGeometry geometry;
};

// Loads and validates everything before any output (a bad file prints nothing else).
// Throws InvalidArgument naming file and field.
model::ModelArchitecture load_model(const KvbenchInputs& in);
std::vector<LoadedConfig> load_configs(const KvbenchInputs& in,
                                       const model::ModelArchitecture& arch);

// The endpoints for one config: CLI flag, else the config's system.source/destination, else
// kvbench's defaults (file, memory).
transfer::Endpoints endpoints_for(const BenchArgs& args, const model::ModelConfig& config);

// "1.12 MB", "576.0 B": kvbench's size format (two decimals, trailing zeros dropped).
std::string kvbench_format_bytes(uint64_t bytes);

}  // namespace kvpager::cli

#pragma once
// How `kvbench plan` prints plans: the seed's text block, a JSON array of objects (every
// nixlbench flag plus config_file) and CSV (flags plus the model config, sorted columns).
// `profile` prints the same text header before running each plan.
#include <string>
#include <vector>

#include "kvbench/kvbench_options.hpp"
#include "kvpager/bench/transfer/xfer_config.hpp"

namespace kvpager::cli {

struct PlannedConfig {
  LoadedConfig loaded;
  transfer::XferConfig xfer;
};

std::string plan_header(const PlannedConfig& plan);               // the "=====" block
std::string plan_command_text(const transfer::XferConfig& xfer);  // "nixlbench \\\n    --..."
std::string plan_text(const std::vector<PlannedConfig>& plans);
std::string plan_json(const std::vector<PlannedConfig>& plans);
std::string plan_csv(const model::ModelArchitecture& arch, const std::vector<PlannedConfig>& plans);

}  // namespace kvpager::cli

// kvpager kvbench plan: the nixlbench command for each model config (text, json or csv).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>
#include <string>

#include "command_registry.hpp"
#include "kvbench/kvbench_buffer_size.hpp"
#include "kvbench/kvbench_options.hpp"
#include "kvbench/kvbench_plan_output.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {
namespace {

struct PlanArgs {
  KvbenchInputs inputs;
  BenchArgs bench;
  std::string format = "text";
  bool total_buffer_size_given = false;  // --total_buffer_size on the command line
};

void run_plan(const PlanArgs& args) {
  if (args.format != "text" && args.format != "json" && args.format != "csv") {
    throw InvalidArgument("--format " + args.format + ": expected text, json or csv");
  }
  args.bench.xfer.validate();
  const model::ModelArchitecture arch = load_model(args.inputs);
  std::vector<PlannedConfig> plans;
  for (auto& lc : load_configs(args.inputs, arch)) {
    PlannedConfig p{lc, transfer::plan_transfer(lc.geometry, lc.config, args.bench.xfer,
                                                endpoints_for(args.bench, lc.config))};
    // A printed plan must run when pasted into nixlbench, which refuses a batch that does not
    // fit its buffer.
    size_buffer_to_plan(p.xfer, args.total_buffer_size_given);
    plans.push_back(std::move(p));
  }
  // Everything is computed before the first byte is printed.
  std::string out;
  if (args.format == "text") out = plan_text(plans);
  if (args.format == "json") out = plan_json(plans);
  if (args.format == "csv") out = plan_csv(arch, plans);
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void register_plan(CommandGroups& groups) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd =
      groups.kvbench.add_subcommand("plan", "Display the recommended configuration for nixlbench");
  add_common_args(*cmd, args->inputs);
  cmd->add_option("--format", args->format, "Output format [text, json, csv]")
      ->capture_default_str();
  add_bench_args(*cmd, args->bench, /*with_endpoints=*/true);
  cmd->callback([args, cmd] {
    args->total_buffer_size_given = cmd->count("--total_buffer_size") > 0;
    run_plan(*args);
  });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_plan);
}  // namespace kvpager::cli

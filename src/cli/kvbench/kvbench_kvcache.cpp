// kvpager kvbench kvcache: model, ISL, batch size and IO (block) size per model config.
#include <cstdio>
#include <string>

#include "command_registry.hpp"
#include "kvbench/kvbench_options.hpp"

namespace kvpager::cli {
namespace {

std::string line(const char* label, const std::string& value) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-23s: %s\n", label, value.c_str());
  return buf;
}

void run_kvcache(const KvbenchInputs& in) {
  const model::ModelArchitecture arch = load_model(in);
  const auto configs = load_configs(in, arch);
  std::string out;
  for (size_t i = 0; i < configs.size(); ++i) {
    const auto& lc = configs[i];
    if (configs.size() > 1) out += (i ? "\n" : "") + line("Model Config", lc.path);
    out += line("Model", arch.name);
    out += line("Input Sequence Length", std::to_string(lc.config.runtime.isl));
    out += line("Batch Size", std::to_string(lc.geometry.batch_size));
    out += line("IO Size", kvbench_format_bytes(lc.geometry.block_bytes));
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void register_kvcache(CommandGroups& groups) {
  auto in = std::make_shared<KvbenchInputs>();
  CLI::App* cmd = groups.kvbench.add_subcommand("kvcache", "Display kvcache information");
  add_common_args(*cmd, *in);
  cmd->callback([in] { run_kvcache(*in); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_kvcache);
}  // namespace kvpager::cli

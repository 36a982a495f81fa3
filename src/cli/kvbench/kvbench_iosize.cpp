// kvpager kvbench iosize: bytes one GPU moves per token for the config's access pattern.
#include <cstdio>
#include <string>

#include "command_registry.hpp"
#include "kvbench/kvbench_options.hpp"

namespace kvpager::cli {
namespace {

void run_iosize(const KvbenchInputs& in) {
  const model::ModelArchitecture arch = load_model(in);
  const auto configs = load_configs(in, arch);
  std::string out;
  for (size_t i = 0; i < configs.size(); ++i) {
    if (configs.size() > 1)
      out += (i ? "\n" : "") + std::string("Model Config: ") + configs[i].path + "\n";
    out += "IO Size per GPU: " + std::to_string(configs[i].geometry.io_bytes_per_token) + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void register_iosize(CommandGroups& groups) {
  auto in = std::make_shared<KvbenchInputs>();
  CLI::App* cmd = groups.kvbench.add_subcommand("iosize", "Display io size information");
  add_common_args(*cmd, *in);
  cmd->callback([in] { run_iosize(*in); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_iosize);
}  // namespace kvpager::cli

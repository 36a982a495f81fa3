// kvpager bench xfer: nixlbench's transfer benchmark on kvpager's engines (UCX, POSIX/GDS
// stand-in, CUDA), same flags, same table.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "bench/bench_xfer_local_ranks.hpp"
#include "command_registry.hpp"
#include "kvbench/kvbench_options.hpp"
#include "kvpager/bench/transfer/xfer_bench.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {
namespace {

struct XferArgs {
  BenchArgs bench;
  std::string json_path;
};

// Writes `text` to `path` through a temporary file and a rename: no partial file on failure.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << text;
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("cannot write " + path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw_errno("rename", errno, path);
  }
}

void run_xfer(const XferArgs& args) {
  args.bench.xfer.validate_for_run();
  const transfer::XferReport report = args.bench.xfer.spawn_local
                                          ? run_with_local_ranks(args.bench.xfer, std::cout)
                                          : transfer::run_xfer_bench(args.bench.xfer, std::cout);
  if (!args.json_path.empty() && !report.rows.empty()) {
    write_atomically(args.json_path, transfer::report_json(report));
  }
}

void register_xfer(CommandGroups& groups) {
  auto args = std::make_shared<XferArgs>();
  CLI::App* cmd = groups.bench.add_subcommand(
      "xfer", "KV transfer benchmark with nixlbench's flags and table (UCX, POSIX, GDS, CUDA)");
  add_bench_args(*cmd, args->bench, /*with_endpoints=*/false);
  cmd->add_option("--json", args->json_path, "Also write the results as JSON to this file");
  cmd->callback([args] { run_xfer(*args); });
}

}  // namespace
KVPAGER_REGISTER_COMMAND(register_xfer);
}  // namespace kvpager::cli

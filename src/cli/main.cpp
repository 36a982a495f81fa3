// kvpager: the command-line entry point. Subcommands register themselves (command_registry.hpp).
// Every failure reaches the user as one line on stderr, "kvpager: error: ...", control
// characters escaped (error_line.hpp); exit status 2 for bad input (CLI11's parse errors and
// InvalidArgument), 1 for any other failure, 0 for --help and --version.
#include <cstdio>
#include <new>
#include <vector>

#include "command_registry.hpp"
#include "error_line.hpp"
#include "kvpager/common/error.hpp"

namespace kvpager::cli {
namespace {
std::vector<CommandRegistrar>& registrars() {
  static std::vector<CommandRegistrar> list;
  return list;
}

int report(const char* what, int code) {
  std::fprintf(stderr, "kvpager: error: %s\n", error_line(what).c_str());
  return code;
}
}  // namespace

bool add_command_registrar(CommandRegistrar registrar) {
  registrars().push_back(registrar);
  return true;
}

}  // namespace kvpager::cli

int main(int argc, char** argv) {
  using namespace kvpager::cli;
  try {
    CLI::App app{"kvpager: elastic KV-cache memory manager for LLM serving"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "kvpager 0.1.0");
    CLI::App* bench = app.add_subcommand("bench", "Benchmarks (vmm, alloc, ...)");
    bench->require_subcommand(1);
    CLI::App* kvbench =
        app.add_subcommand("kvbench", "KV-cache sizing and transfer planning per model");
    kvbench->require_subcommand(1);
    CommandGroups groups{app, *bench, *kvbench};
    for (auto registrar : registrars()) registrar(groups);
    // A binary built with only some commands (the wheel's: the registry commands) shows no
    // empty group, and says where the others are.
    bool removed = false;
    for (CLI::App* group : {bench, kvbench}) {
      if (group->get_subcommands([](CLI::App*) { return true; }).empty()) {
        app.remove_subcommand(group);
        removed = true;
      }
    }
    if (removed) {
      app.footer(
          "This kvpager has the registry commands only (pip's wheel); bench and kvbench "
          "come with the full build (README: Build).");
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      return app.exit(CLI::CallForHelp());
    } catch (const CLI::CallForAllHelp&) {
      return app.exit(CLI::CallForAllHelp());
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      return report(e.what(), kExitUsage);
    }
  } catch (const ExitStatus& s) {
    return s.code;
  } catch (const kvpager::InvalidArgument& e) {
    return report(e.what(), kExitUsage);
  } catch (const std::bad_alloc&) {
    return report("out of host memory (an allocation failed); nothing more was done", kExitFailure);
  } catch (const std::exception& e) {
    return report(e.what(), kExitFailure);
  }
  return kExitOk;
}

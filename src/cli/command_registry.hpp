#pragma once
// How `kvpager` subcommands plug in: each command lives in its own file under src/cli/ (admin/,
// bench/, kvbench/, demo/) and registers itself with KVPAGER_REGISTER_COMMAND(fn); fn adds a
// CLI11 subcommand to the root app or to the `bench` / `kvbench` groups. Adding a command is one
// file, no other edit.
#include <CLI/CLI.hpp>
#include <stdexcept>

namespace kvpager::cli {

struct CommandGroups {
  CLI::App& root;
  CLI::App& bench;    // kvpager bench <name>
  CLI::App& kvbench;  // kvpager kvbench <name>
};

using CommandRegistrar = void (*)(CommandGroups&);

// Called from static initialisers; not thread-safe (runs before main).
bool add_command_registrar(CommandRegistrar registrar);

// Throw to end the program with a specific exit status after a message was printed.
struct ExitStatus {
  int code;
};

// Exit codes: 0 ok, 1 runtime failure, 2 usage / bad input.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace kvpager::cli

#define KVPAGER_CONCAT_INNER(a, b) a##b
#define KVPAGER_CONCAT(a, b) KVPAGER_CONCAT_INNER(a, b)
#define KVPAGER_REGISTER_COMMAND(fn)                                        \
  static const bool KVPAGER_CONCAT(kvpager_registered_command_, __LINE__) = \
      ::kvpager::cli::add_command_registrar(&(fn))

// The command groups of the `belay` CLI; each registers its subcommands on the app.
#pragma once

#include "CLI/CLI.hpp"

namespace belay::cli {

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the operation failed (I/O, daemon unreachable, ...)
inline constexpr int kExitInvalid = 2;  // bad input: command line or campaign file

// `belay validate FILE...`. The command stores its exit code in *exit_code when it runs.
void AddValidateCommand(CLI::App& app, int* exit_code);

// `belay data prepare --out DIR [--val-fraction F] [--shard-tokens N] FILE...`: text files to
// byte-level token shards. Stores its exit code in *exit_code when it runs.
void AddDataCommand(CLI::App& app, int* exit_code);

}  // namespace belay::cli

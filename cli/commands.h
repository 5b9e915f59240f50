// The command groups of the `belay` CLI; each registers its subcommands on the app.
#pragma once

#include "CLI/CLI.hpp"

namespace belay::cli {

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;      // the operation failed (I/O, daemon unreachable, ...)
inline constexpr int kExitInvalid = 2;      // bad input: command line or campaign file
inline constexpr int kExitNotFound = 3;     // no such campaign (or not one of yours)
inline constexpr int kExitUnavailable = 4;  // belayd is not reachable
inline constexpr int kExitCampaignFailed =
    5;  // `watch`/`submit --watch`: the campaign failed or was cancelled

// `belay validate FILE...`. The command stores its exit code in *exit_code when it runs.
void AddValidateCommand(CLI::App& app, int* exit_code);

// `belay plan FILE [--json] [--memory SIZE] [--gpu-memory SIZE|NAME]`: parameters, FLOPs and
// memory per rank of a campaign. Stores its exit code in *exit_code when it runs.
void AddPlanCommand(CLI::App& app, int* exit_code);

// `belay data prepare --out DIR [--val-fraction F] [--shard-tokens N] FILE...`: text files to
// byte-level token shards. Stores its exit code in *exit_code when it runs.
void AddDataCommand(CLI::App& app, int* exit_code);

// `belay export CHECKPOINT --out DIR [--dtype bf16|fp32]`: a committed checkpoint as a
// Hugging Face model directory. Stores its exit code in *exit_code when it runs.
void AddExportCommand(CLI::App& app, int* exit_code);

// The commands that talk to belayd: submit, ls, status, watch, loss, events, ckpt, cancel,
// logs, nodes, daemon. `socket` is the global --socket flag.
void AddCampaignCommands(CLI::App& app, const std::string* socket, int* exit_code);

}  // namespace belay::cli

// The `train` subcommand of belay-worker: its arguments; the training itself is
// train::RunTraining (worker/train/run.h).
#pragma once

#include "CLI/CLI.hpp"

namespace belay::worker {

void AddTrainCommand(CLI::App& app, int* exit_code);

}  // namespace belay::worker

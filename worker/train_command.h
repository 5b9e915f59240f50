// The `train` subcommand of belay-worker.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"

namespace belay::worker {

struct TrainOptions {
  std::string spec_file;
  int64_t steps = 0;
  std::string out;
  std::string resume;
};

void AddTrainCommand(CLI::App& app, int* exit_code);

}  // namespace belay::worker

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
  // Under belayd: resume from the checkpoint belayd names at registration (a job submitted
  // before its checkpoint was known: [resources] presubmit).
  bool resume_from_coordinator = false;
  // "cpu", "cuda", or "auto": cuda when the campaign asks for GPUs (resources.gpus_per_node).
  std::string device = "auto";
  // checkpoint.every_steps = "auto": the mean time between failures the save interval is
  // chosen for (a duration; --mtbf, or BELAY_CHECKPOINT_MTBF as belayd sets it).
  std::string mtbf = "4h";
};

void AddTrainCommand(CLI::App& app, int* exit_code);

}  // namespace belay::worker

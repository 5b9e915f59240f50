// `belay-worker train` for one rank, standalone or under belayd (BELAY_COORDINATOR and
// BELAY_TOKEN set): joining the job, the trainer, the resume, then the training loop.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace belay::train {

struct RunOptions {
  std::string spec_file;
  int64_t steps = 0;   // stop after this step; 0: the campaign's total
  std::string out;     // checkpoint root instead of checkpoint.dir, when set
  std::string resume;  // a step directory or a checkpoint root, when set
  // Under belayd: resume from the checkpoint belayd names at registration (a job submitted
  // before its checkpoint was known: [resources] presubmit).
  bool resume_from_coordinator = false;
  // "cpu", "cuda", or "auto": cuda when the campaign asks for GPUs (resources.gpus_per_node).
  std::string device = "auto";
  // checkpoint.every_steps = "auto": the mean time between failures the save interval is
  // chosen for, in seconds, or why the option giving it was refused.
  absl::StatusOr<double> mtbf_s = 4 * 3600.0;
};

// Trains this rank to the last step or a stop signal; errors are logged (and told to belayd).
// Returns the process's exit code: 0; 2 for a campaign file or option that is refused; 1 for
// any other error.
int RunTraining(const RunOptions& options);

}  // namespace belay::train

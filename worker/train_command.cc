// `belay-worker train`: the subcommand's options, turned into train::RunOptions.
#include "worker/train_command.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>

#include "common/duration.h"
#include "common/strings.h"
#include "worker/train/run.h"

namespace belay::worker {
namespace {

// --mtbf: a duration ("4h", "1h30m") or a number of seconds above zero ("0.5").
absl::StatusOr<double> ParseMtbf(const std::string& text) {
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [at, ec] = std::from_chars(text.data(), end, seconds);
  if (ec != std::errc() || at != end) {
    absl::StatusOr<std::chrono::seconds> d = ParseDuration(text);
    if (!d.ok())
      return absl::InvalidArgumentError(
          Cat("\"", text, "\" is neither a duration nor a number of seconds"));
    seconds = static_cast<double>(d->count());
  }
  if (!(seconds > 0) || !std::isfinite(seconds))
    return absl::InvalidArgumentError(Cat("\"", text, "\" must be above zero"));
  return seconds;
}

struct TrainArguments {
  train::RunOptions run;
  // checkpoint.every_steps = "auto": the mean time between failures the save interval is
  // chosen for (a duration; --mtbf, or BELAY_CHECKPOINT_MTBF as belayd sets it).
  std::string mtbf = "4h";
};

}  // namespace

void AddTrainCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<TrainArguments>();
  train::RunOptions& opts = args->run;
  CLI::App* cmd = app.add_subcommand(
      "train", "Train standalone (without belayd): one JSON object per step on stdout");
  cmd->add_option("--spec", opts.spec_file, "campaign file")->required();
  cmd->add_option("--steps", opts.steps,
                  "stop after this step (default: the campaign's total); the LR schedule still "
                  "follows the campaign's total")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", opts.out, "checkpoint root, instead of checkpoint.dir");
  cmd->add_option("--resume", opts.resume,
                  "checkpoint to resume from: a step directory, or a checkpoint root (its newest "
                  "committed step)");
  cmd->add_flag("--resume-from-coordinator", opts.resume_from_coordinator,
                "under belayd: resume from the checkpoint belayd names when the ranks register "
                "(for jobs queued before that checkpoint existed)")
      ->excludes("--resume");
  cmd->add_option(
         "--mtbf", args->mtbf,
         "for checkpoint.every_steps = \"auto\": the mean time between failures to save for, "
         "a duration such as \"4h\" or seconds (belayd sets it from the campaign's history)")
      ->envname("BELAY_CHECKPOINT_MTBF")
      ->capture_default_str();
  cmd->add_option(
         "--device", opts.device,
         "cpu, cuda, or auto: cuda when the campaign asks for GPUs (resources.gpus_per_node); "
         "each rank takes the GPU of its local rank")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([args, exit_code] {
    args->run.mtbf_s = ParseMtbf(args->mtbf);
    *exit_code = train::RunTraining(args->run);
  });
}

}  // namespace belay::worker

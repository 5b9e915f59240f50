// `belay-worker train`: standalone training without belayd, one JSON object per step on
// stdout, logs on stderr.
#include "worker/train_command.h"

#include <csignal>
#include <iostream>
#include <memory>

#include "common/campaign_spec.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/train/trainer.h"

namespace belay::worker {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int sig) { g_stop_signal = sig; }

void PrintStep(const train::StepMetrics& m) {
  nlohmann::json j = {{"step", m.step},
                      {"loss", m.loss},
                      {"lr", m.lr},
                      {"grad_norm", m.grad_norm},
                      {"tokens_per_s", m.tokens_per_s},
                      {"goldfish_dropped", m.goldfish_dropped}};
  std::cout << j.dump() << std::endl;
}

int Run(const TrainOptions& o) {
  SpecParseResult parsed = LoadCampaignSpec(o.spec_file);
  if (!parsed.ok()) {
    for (const SpecError& e : parsed.errors) std::cerr << e.ToString() << "\n";
    return 2;
  }
  CampaignSpec spec = std::move(*parsed.spec);
  if (!o.out.empty()) spec.checkpoint.dir = std::filesystem::absolute(o.out).lexically_normal();
  const int64_t last = o.steps > 0 ? o.steps : spec.total_steps();

  absl::StatusOr<std::unique_ptr<train::Trainer>> created = train::Trainer::Create(spec);
  if (!created.ok()) {
    spdlog::error("{}", std::string(created.status().message()));
    return 1;
  }
  train::Trainer& trainer = **created;
  if (!o.resume.empty()) {
    absl::Status s = trainer.Resume(o.resume);
    if (!s.ok()) {
      spdlog::error("cannot resume from {}: {}", o.resume, std::string(s.message()));
      return 1;
    }
    spdlog::info("resumed from {} at step {}", o.resume, trainer.step());
  }

  // SIGUSR1 (Slurm's pre-limit signal) and SIGTERM: finish the current step, checkpoint, exit.
  std::signal(SIGUSR1, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);

  const std::optional<int64_t> every = spec.checkpoint.every_steps;
  train::StepMetrics m;
  int64_t saved_at = trainer.step();
  while (trainer.step() < last && g_stop_signal == 0) {
    m = trainer.TrainStep();
    PrintStep(m);
    if (spec.train.eval_every > 0 && m.step % spec.train.eval_every == 0) {
      std::cout << nlohmann::json{{"step", m.step}, {"val_loss", trainer.Evaluate()}}.dump()
                << std::endl;
    }
    if (every && m.step % *every == 0) {
      absl::StatusOr<train::CheckpointInfo> c = trainer.SaveCheckpoint(spec.checkpoint.dir, m);
      if (!c.ok()) {
        // A failed save is reported and training goes on; the previous checkpoint stands.
        spdlog::error("checkpoint at step {} failed: {}", m.step, std::string(c.status().message()));
      } else {
        saved_at = m.step;
        spdlog::info("checkpoint step {}: {} ({} bytes)", c->step, c->step_dir.string(), c->bytes);
      }
    }
  }
  if (g_stop_signal != 0) spdlog::warn("signal {}: checkpointing and stopping", int{g_stop_signal});
  if (trainer.step() != saved_at) {
    absl::StatusOr<train::CheckpointInfo> c = trainer.SaveCheckpoint(spec.checkpoint.dir, m);
    if (!c.ok()) {
      spdlog::error("final checkpoint at step {} failed: {}", trainer.step(),
                    std::string(c.status().message()));
      return 1;
    }
    spdlog::info("checkpoint step {}: {} ({} bytes)", c->step, c->step_dir.string(), c->bytes);
  }
  return 0;
}

}  // namespace

void AddTrainCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Train standalone (without belayd): one JSON object per step on stdout");
  cmd->add_option("--spec", opts->spec_file, "campaign file")->required();
  cmd->add_option("--steps", opts->steps,
                  "stop after this step (default: the campaign's total); the LR schedule still "
                  "follows the campaign's total")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", opts->out, "checkpoint root, instead of checkpoint.dir");
  cmd->add_option("--resume", opts->resume,
                  "checkpoint to resume from: a step directory, or a checkpoint root (its newest "
                  "committed step)");
  cmd->callback([opts, exit_code] { *exit_code = Run(*opts); });
}

}  // namespace belay::worker

// The training loop of one rank, standalone or under belayd: steps to the last one or a stop
// signal, evaluations, periodic saves (synchronous or asynchronous, at a fixed interval or by
// the Young/Daly rule), the final save, and what rank 0 prints and every rank reports.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "worker/comm/communicator.h"
#include "worker/runtime/coordinator_client.h"
#include "worker/train/checkpoint_interval.h"
#include "worker/train/checkpoint_io.h"
#include "worker/train/trainer.h"

namespace belay::train {

class TrainingLoop {
 public:
  // Trains `trainer` up to step `last`; `link` is belayd's worker link (null standalone);
  // `mtbf_s` the mean time between failures for checkpoint.every_steps = "auto". All three
  // references must outlive the loop.
  TrainingLoop(Trainer& trainer, comm::Communicator& comm, runtime::CoordinatorClient* link,
               int64_t last, double mtbf_s);

  // SIGUSR1 (Slurm's pre-limit signal) and SIGTERM from now on: the current step finishes, a
  // checkpoint is written, and Run returns.
  static void CatchStopSignals();

  // Trains, then writes the final checkpoint and (under belayd) says how the rank leaves.
  // Returns the process's exit code: 0, or 1 when the final save failed. Collective.
  int Run();

 private:
  // Whether any rank has seen a stop signal. Collective.
  bool StopRequested();
  // Whether step `step` is to be saved: every_steps, or rank 0's auto decision (and
  // keep_every), agreed by all. Collective.
  bool SaveDue(int64_t step);
  // What follows each step: reports, the completion of an asynchronous save begun after the
  // previous step, evaluation, and the save of this step when due.
  void AfterStep(const StepMetrics& m);
  void Evaluate(int64_t step);
  void Save(const StepMetrics& m);
  void FinishPending();
  // A save ended: `began` is when its state was taken, `cost` the seconds it held this
  // rank's training up (the auto interval's save cost; reported with the shard for the
  // goodput ledger).
  void Saved(const absl::StatusOr<CheckpointInfo>& c, const StepMetrics& at, double began,
             double cost);

  Trainer& trainer_;
  comm::Communicator& comm_;
  runtime::CoordinatorClient* link_;
  const CampaignSpec& spec_;
  const int64_t last_;
  const bool lead_;  // rank 0: prints the JSON lines
  // Under belayd the ranks write and report their shards; belayd commits (docs/checkpoints.md).
  const SaveMode save_mode_;
  // checkpoint.every_steps = "auto": rank 0 times the steps and the saves and decides by the
  // Young/Daly rule (checkpoint_interval.h).
  std::optional<AutoCheckpointClock> auto_clock_;
  // Fault injection for tests: step whose loss is to be NaN (0: none).
  int64_t nan_at_ = 0;
  int64_t saved_at_ = 0;  // the step of the last successful save (or resume)
  // checkpoint.async: a save whose shard is written during the next step, completed after it.
  std::unique_ptr<PendingSave> pending_;
  double pending_at_ = 0, pending_cost_ = 0;  // when the pending save began, its cost so far
};

}  // namespace belay::train

// One rank's loop over the training steps, with its saves and reports.
#include "worker/train/training_loop.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>

#include "common/strings.h"
#include "spdlog/spdlog.h"
#include "worker/train/rank_agreement.h"
#include "worker/train/reports.h"

namespace belay::train {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int sig) { g_stop_signal = sig; }

// Seconds on the monotonic clock.
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// BELAY_FAULT_NAN_AT_STEP=N makes step N's loss NaN, in the attempt BELAY_FAULT_ATTEMPT names
// (default 1) when run under belayd; 0 without.
int64_t NanFaultStep() {
  const char* v = std::getenv("BELAY_FAULT_NAN_AT_STEP");
  if (v == nullptr) return 0;
  const char* want = std::getenv("BELAY_FAULT_ATTEMPT");
  const char* attempt = std::getenv("BELAY_ATTEMPT");
  if (attempt == nullptr || std::string(attempt) == (want != nullptr ? want : "1"))
    return std::atoll(v);
  return 0;
}

}  // namespace

TrainingLoop::TrainingLoop(Trainer& trainer, comm::Communicator& comm,
                           runtime::CoordinatorClient* link, int64_t last, double mtbf_s)
    : trainer_(trainer),
      comm_(comm),
      link_(link),
      spec_(trainer.spec()),
      last_(last),
      lead_(comm.rank() == 0),
      save_mode_(link ? SaveMode::kShardsOnly : SaveMode::kCommit),
      nan_at_(NanFaultStep()),
      saved_at_(trainer.step()) {
  if (!spec_.checkpoint.every_steps) auto_clock_.emplace(mtbf_s, Now());
}

void TrainingLoop::CatchStopSignals() {
  std::signal(SIGUSR1, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
}

int TrainingLoop::Run() {
  StepMetrics m;
  while (trainer_.step() < last_ && !StopRequested()) {
    if (nan_at_ > 0 && trainer_.step() + 1 == nan_at_) {
      spdlog::warn("fault injection: step {} will have a non-finite loss", nan_at_);
      trainer_.PoisonParametersForTesting();
    }
    m = trainer_.TrainStep();
    AfterStep(m);
  }
  FinishPending();
  if (g_stop_signal != 0) spdlog::warn("signal {}: checkpointing and stopping", int{g_stop_signal});
  if (trainer_.step() != saved_at_) {
    const double t0 = Now();
    absl::StatusOr<CheckpointInfo> c = trainer_.SaveCheckpoint(spec_.checkpoint.dir, m, save_mode_);
    if (!c.ok()) {
      return Fail(
          lead_, link_,
          Cat("final checkpoint at step ", trainer_.step(), " failed: ", c.status().message()));
    }
    Saved(c, m, t0, Now() - t0);
  }
  if (link_) {
    const v1::ExitKind kind = trainer_.step() >= spec_.total_steps() ? v1::EXIT_KIND_COMPLETED
                              : g_stop_signal == SIGUSR1 ? v1::EXIT_KIND_TIME_LIMIT_CHECKPOINTED
                                                         : v1::EXIT_KIND_STOPPED;
    link_->Finish(kind, v1::END_REASON_UNSPECIFIED, "", trainer_.step(), std::chrono::seconds(30))
        .IgnoreError();
  }
  return 0;
}

void TrainingLoop::AfterStep(const StepMetrics& m) {
  if (auto_clock_) auto_clock_->StepEnded(Now());
  if (lead_) PrintStep(m);
  if (link_) {
    link_->SetPosition(m.step, v1::WORKER_PHASE_DATA);
    if (lead_) link_->ReportStep(StepProto(m));
  }
  FinishPending();
  if (spec_.train.eval_every > 0 && m.step % spec_.train.eval_every == 0) Evaluate(m.step);
  if (SaveDue(m.step)) Save(m);
}

bool TrainingLoop::StopRequested() {
  // A signal may reach the ranks at different steps: they stop together, at the first step
  // after which any of them has seen one.
  int64_t stop = g_stop_signal != 0 ? 1 : 0;
  CheckCollective(comm_.AllReduceSumInt64(std::span(&stop, 1)), "all-reduce of the stop flag");
  return stop > 0;
}

bool TrainingLoop::SaveDue(int64_t step) {
  if (spec_.checkpoint.every_steps) return step % *spec_.checkpoint.every_steps == 0;
  // Every rank follows rank 0's decision (one all-reduce a step), so all save the same step.
  // Steps that are multiples of keep_every are saved too.
  int64_t due = lead_ && auto_clock_->Due(Now()) ? 1 : 0;
  if (spec_.checkpoint.keep_every > 0 && step % spec_.checkpoint.keep_every == 0) due = 1;
  CheckCollective(comm_.AllReduceSumInt64(std::span(&due, 1)), "all-reduce of the save decision");
  return due > 0;
}

void TrainingLoop::Evaluate(int64_t step) {
  const double val = trainer_.Evaluate();
  if (lead_) PrintEval(step, val);
  if (link_ && lead_) {
    v1::EvalMetrics e;
    e.set_step(step);
    e.set_dataset("val");
    e.set_loss(val);
    link_->ReportEval(e);
  }
}

void TrainingLoop::Save(const StepMetrics& m) {
  const double t0 = Now();
  if (!spec_.checkpoint.async) {
    absl::StatusOr<CheckpointInfo> c = trainer_.SaveCheckpoint(spec_.checkpoint.dir, m, save_mode_);
    Saved(c, m, t0, Now() - t0);
    return;
  }
  // The shard is written by a thread of its own during the next step, and the save
  // completes (reported to belayd, or committed standalone) after that step, at the same
  // step on every rank. A failed save is reported and training goes on; the previous
  // checkpoint stands.
  absl::StatusOr<std::unique_ptr<PendingSave>> begun =
      trainer_.BeginSave(spec_.checkpoint.dir, m, save_mode_, /*background=*/true);
  if (!begun.ok()) {
    Saved(begun.status(), m, t0, Now() - t0);
    return;
  }
  pending_ = std::move(*begun);
  pending_at_ = t0;
  pending_cost_ = Now() - t0;
}

void TrainingLoop::FinishPending() {
  if (!pending_) return;
  const double t0 = Now();
  absl::StatusOr<CheckpointInfo> c = trainer_.FinishSave(*pending_);
  const double cost = pending_cost_ + (Now() - t0);
  const StepMetrics at = pending_->last;
  pending_.reset();
  Saved(c, at, pending_at_, cost);
}

void TrainingLoop::Saved(const absl::StatusOr<CheckpointInfo>& c, const StepMetrics& at,
                         double began, double cost) {
  if (auto_clock_) {
    auto_clock_->Saved(began, cost);
    if (lead_) {
      spdlog::info(
          "checkpoint.every_steps = auto: the save held training up {:.3f} s; next save {:.0f} s "
          "after it",
          cost, auto_clock_->interval_s().value_or(0));
    }
  }
  if (!c.ok()) {
    if (lead_)
      spdlog::error("checkpoint at step {} failed: {}", at.step, std::string(c.status().message()));
    if (link_ && lead_) link_->ReportSaveFailure(at.step, std::string(c.status().message()));
    return;
  }
  saved_at_ = at.step;
  if (lead_) spdlog::info("checkpoint step {}: {}", c->step, c->step_dir.string());
  if (link_)
    link_->ReportShard(ShardProto(*c, comm_.rank(), cost),
                       lead_ ? std::optional(StepProto(at)) : std::nullopt);
}

}  // namespace belay::train

// What a training rank tells: JSON lines on stdout (rank 0), and the messages of the worker
// link to belayd.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "belay/v1/worker.pb.h"
#include "worker/comm/communicator.h"
#include "worker/runtime/coordinator_client.h"
#include "worker/train/checkpoint_io.h"
#include "worker/train/step_metrics.h"
#include "worker/train/trainer.h"

namespace belay::train {

// {"step": …, "loss": …, …} on stdout, numbers in their shortest round-trip form.
void PrintStep(const StepMetrics& m);
// {"step": …, "val_loss": …} on stdout.
void PrintEval(int64_t step, double val_loss);

// What each rank holds, gathered to rank 0 and printed there as one JSON line:
// {"event": "memory", "world_size": W, "zero_stage": s, "param_bytes": [...], ...}.
// Collective.
absl::Status PrintMemory(const Trainer& trainer, comm::Communicator& comm);

v1::StepMetrics StepProto(const StepMetrics& m);
// `blocked_s`: how long the save held this rank's training up.
v1::CheckpointShard ShardProto(const CheckpointInfo& c, int rank, double blocked_s);
v1::WorkerPhase PhaseProto(Phase phase);

// Ends this rank with an error all ranks agree on: logged once, by rank 0 (`lead`), and told
// to belayd by every rank (`link`, when under belayd). Returns `exit_code`.
int Fail(bool lead, runtime::CoordinatorClient* link, const std::string& what,
         v1::EndReason reason = v1::END_REASON_UNSPECIFIED, int exit_code = 1);

}  // namespace belay::train

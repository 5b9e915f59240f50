// The pure parts of the Slurm backend: the batch script belayd submits, the job comment that
// tags a job with its campaign and attempt, and what a Slurm job state means to belay.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

// "belay:campaign=<id>:attempt=<n>:key=<16 hex digits>" (campaign ids have no ':'). The key
// is a hash of the attempt's token: it tells this attempt's job from a job of the same
// campaign id and attempt number submitted by another belayd (another state directory)
// without revealing the token (comments are public). A restarted belayd finds the job of an
// attempt by it.
std::string SlurmJobComment(const std::string& campaign_id, int32_t attempt,
                            std::string_view token);
struct SlurmJobTag {
  std::string campaign_id;
  int32_t attempt = 0;
  std::string key;
  bool operator==(const SlurmJobTag&) const = default;
};
// Inverse of SlurmJobComment; nullopt for any other comment.
std::optional<SlurmJobTag> ParseSlurmJobComment(std::string_view comment);

// `text` in single quotes for /bin/sh.
std::string ShellQuote(std::string_view text);

// The batch script for a job: in the allocation, Open MPI's `mpirun` (which reads the
// allocation and starts one rank per task slot through Slurm) runs every rank under the rank
// wrapper (rank_files.h), in `job.work_dir` when set. USR1 or TERM sent to the batch shell —
// Slurm's pre-limit signal (`--signal=B:USR1@N`) or belayd — is passed on to mpirun, which
// passes it on to every rank (USR1: checkpoint and stop). The script exits with mpirun's
// status. The job's environment (token, coordinator, MPI settings) travels with the job, not
// in the script. GPU jobs (job.gpus_per_node > 0, or job.srun) start their ranks with srun
// instead, one task per rank, which passes the signals on the same way.
std::string SlurmBatchScript(const JobSpec& job, const std::string& mpirun);

// What a Slurm job state (slurm_job_info_t::job_state: a base state and flags) means for
// belay: the job state and, for an ended job, the end reason Slurm alone can tell
// (END_REASON_UNSPECIFIED where the ranks' exits decide: completed, failed). A job whose
// processes are still completing counts as running.
struct SlurmStateMeaning {
  JobState state = JobState::kUnknown;
  pb::EndReason reason = pb::END_REASON_UNSPECIFIED;
  std::string name;  // "PENDING", "NODE_FAIL", ...
};
SlurmStateMeaning MeaningOfSlurmState(uint32_t job_state);

// A node state as sinfo writes it: the base state ("IDLE", "ALLOCATED", "MIXED", "DOWN", ...),
// "+DRAIN" while drained or draining, "+FAIL" while failing, and "*" when the node does not
// respond (libslurm 22.05 has no public function for this).
std::string SlurmNodeStateName(uint32_t node_state);

}  // namespace belay::sched

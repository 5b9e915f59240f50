// How belayd runs an attempt's ranks: the Scheduler interface, implemented by the local
// process backend (local_scheduler.h) and Slurm (slurm_scheduler.h); routing_scheduler.h
// hands each job to the backend its campaign asks for. The supervisor decides what to run
// and when; a Scheduler only starts, observes and signals jobs.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "daemon/scheduler/identity.h"

namespace belay::sched {

namespace pb = ::belay::v1;

// What to run for one attempt.
struct JobSpec {
  std::string campaign_id;
  int32_t attempt = 0;
  int world_size = 1;
  int ranks_per_node = 1;
  // Every rank runs this program with these arguments (argv[0] a path, or a name looked up
  // in PATH).
  std::vector<std::string> command;
  // Added to every rank's environment (on top of the daemon's).
  std::vector<std::pair<std::string, std::string>> env;
  // Where rank r writes its output (rank_<r, 5 digits>.log); created if missing, mode 0700
  // (the job's user's): nobody else reads what the ranks print.
  std::filesystem::path log_dir;
  // Files the ranks read, written into log_dir before they start (name, contents): e.g. the
  // campaign spec, which belayd's own copy in its private state directory cannot serve to a
  // job running as another user. Names are plain file names.
  std::vector<std::pair<std::string, std::string>> files;
  // The ranks' working directory; empty: the daemon's.
  std::filesystem::path work_dir;
  std::vector<std::string> exclude_nodes;  // nodes not to run on (Slurm)
  std::optional<std::chrono::seconds> time_limit;
  // Which backend runs it (RoutingScheduler), and the campaign's Slurm settings.
  pb::SchedulerKind kind = pb::SCHEDULER_KIND_LOCAL;
  std::string partition;
  std::string account;
  std::vector<std::string> sbatch_options;               // "--name=value" (or "--name")
  std::optional<std::chrono::seconds> pre_limit_signal;  // USR1 this long before the time limit
  // GPUs per node the job needs (Slurm: the job asks for gres gpu per node and its ranks are
  // started with srun, one task per GPU, each choosing its GPU by SLURM_LOCALID); 0: CPU ranks
  // started with mpirun.
  int gpus_per_node = 0;
  // Start the ranks with srun instead of mpirun even without GPUs (ranks that need no MPI).
  bool srun = false;
  // A job id of this scheduler: start only once that job has ended, however it ended (Slurm:
  // --dependency=afterany). Empty: no dependency.
  std::string after_job;
  // The user the ranks run as (belayd running as root starts a campaign's ranks as its owner):
  // that uid with its passwd entry's primary group, supplementary groups, home and name. Unset,
  // or belayd's own uid: belayd's user. Another uid needs belayd to run as root
  // (PermissionDenied otherwise); a uid without a passwd entry is FailedPrecondition.
  std::optional<uint32_t> run_as_uid;
};

// Whom job `job` runs as when that is not belayd's own user (see JobSpec::run_as_uid);
// nullopt when it is.
absl::StatusOr<std::optional<RunAs>> ResolveRunAs(const JobSpec& job);
// Prepares directory `dir` (which belayd created) for a job running as `as`: owned by that
// user (not through a symlink), so its ranks can write their logs there; FailedPrecondition,
// naming the directory, when that user cannot reach it (a directory above it that the user
// may not search, e.g. a state directory of mode 0700).
absl::Status GiveDirectory(const std::filesystem::path& dir, const RunAs& as);
// Creates job.log_dir (mode 0700; an existing one is set to 0700 too, not through a symlink),
// writes job.files into it (mode 0644 inside that directory: readable by the job's user only)
// and hands it to `as` when set (GiveDirectory). Every backend's Submit starts with it.
absl::Status PrepareLogDirectory(const JobSpec& job, const std::optional<RunAs>& as);

enum class JobState {
  kQueued,   // accepted, ranks not started yet
  kRunning,  // ranks started, not all ended
  kEnded,    // no rank is running any more
  kUnknown,  // the scheduler has no such job (never had, or forgot it)
};
std::string_view JobStateName(JobState state);

// How one rank ended, as far as the scheduler saw it.
struct RankEnd {
  int rank = 0;
  std::optional<int> exit_code;  // its exit status, when it exited
  int signal = 0;                // the signal that killed it, or 0
  std::string node;
  friend bool operator==(const RankEnd&, const RankEnd&) = default;
};

struct JobStatus {
  std::string job_id;
  JobState state = JobState::kUnknown;
  // For an ended job: the end reason the scheduler itself can tell (Slurm: time limit, node
  // failure, preemption, ...), or END_REASON_UNSPECIFIED when it cannot and the supervisor
  // decides from the rank ends and the workers' own reports.
  pb::EndReason reason = pb::END_REASON_UNSPECIFIED;
  std::string message;  // human-readable detail
  std::vector<std::string> nodes;
  std::vector<RankEnd> ranks;  // ended ranks it knows about, in rank order
};

// Contract (tested for every implementation):
//  - Submit returns an id that names the job for this scheduler, stays valid across daemon
//    restarts (a new Scheduler object with the same configuration polls and signals it) and
//    is never reused for another job. Submit is idempotent per (campaign_id, attempt, the
//    BELAY_TOKEN of env): asked again — by a belayd that crashed before it could record the
//    id — it returns the job it already started instead of starting a second one. (An attempt
//    whose presubmitted job was given up gets a new token, so a job of its own.)
//  - Poll takes a batch of ids (one call per supervision round, whatever the number of
//    campaigns) and returns one status per id, in order.
//  - Signal delivers a signal to every rank of a running job; for an ended job it is OK and
//    does nothing. SIGUSR1 asks ranks to checkpoint and stop (Slurm's pre-limit signal),
//    SIGKILL ends them at once.
//  - Thread-compatible: one caller at a time.
// A node of the scheduler's cluster as its controller reports it.
struct NodeState {
  std::string name;
  std::string state;   // e.g. "IDLE", "ALLOCATED", "DOWN*", "IDLE+DRAIN"
  std::string reason;  // why an administrator or the controller took it out; may be empty
  bool down = false;   // unusable: down, not responding or failing
  bool drain = false;  // drained or draining: takes no new jobs
  std::vector<std::string> partitions = {};  // the partitions it belongs to
  bool in_default_partition = false;         // one of them is where jobs without a partition go
};

// Calls made to a scheduler's controller (Slurm: libslurm RPCs to slurmctld) since start.
struct ControllerCalls {
  int64_t made = 0;
  int64_t refused = 0;  // not made: over the budget or during a backoff
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual pb::SchedulerKind kind() const = 0;
  virtual absl::StatusOr<std::string> Submit(const JobSpec& job) = 0;
  virtual absl::StatusOr<std::vector<JobStatus>> Poll(const std::vector<std::string>& job_ids) = 0;
  virtual absl::Status Signal(const std::string& job_id, int signal) = 0;
  // The controller calls so far; safe from any thread. Backends without a controller: none.
  virtual ControllerCalls controller_calls() const { return {}; }
  // The cluster's nodes and their states (one controller call); none for backends without a
  // cluster of nodes.
  virtual absl::StatusOr<std::vector<NodeState>> NodeStates() { return std::vector<NodeState>{}; }
};

}  // namespace belay::sched

// The supervisor: carries campaigns through their attempts. It reconciles what the store says
// each campaign wants with what the scheduler and the workers report, decides with the pure
// functions of policy.h, writes every transition to the store (synced) before acting on it,
// and acts idempotently (submit, signal), so a belayd restarted at any point picks up where
// the last one stopped. It keeps the lifecycle, the rounds and the workers' tokens; the
// checkpoints are CheckpointKeeper's, running attempts' heartbeats and pace AttemptMonitor's,
// the nodes NodePlanner's, and what follows an attempt's end is PlanAttemptEnd's plan.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "common/rng.h"
#include "daemon/checkpoints/checkpoint_files.h"
#include "daemon/checkpoints/keeper.h"
#include "daemon/scheduler/scheduler.h"
#include "daemon/store/event_log.h"
#include "daemon/store/store.h"
#include "daemon/supervisor/attempt_end.h"
#include "daemon/supervisor/attempt_monitor.h"
#include "daemon/supervisor/attempt_tokens.h"
#include "daemon/supervisor/job_spec.h"
#include "daemon/supervisor/node_health.h"
#include "daemon/supervisor/node_planner.h"
#include "daemon/supervisor/policy.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

struct SupervisorOptions {
  // campaigns/<id>/campaign.toml (the effective spec the workers read) and
  // campaigns/<id>/attempt_<n>/ (rank logs) live here.
  std::filesystem::path state_dir;
  // The worker program (belay-worker) and the address workers reach belayd's worker link at
  // (BELAY_COORDINATOR; empty: workers run without reporting).
  std::string worker_program = "belay-worker";
  std::string coordinator_address;
  // The worker link's TLS: the CA certificate (PEM) the ranks verify belayd against (each
  // attempt's log directory gets it as coordinator-ca.pem, BELAY_COORDINATOR_CA names it) and
  // the name belayd's certificate is issued to (BELAY_COORDINATOR_TLS_NAME; empty: the
  // address's host). No CA: the link is plaintext.
  std::string coordinator_ca_pem;
  std::string coordinator_tls_name;
  // hang_timeout = "auto" (policy.h AutoHangTimeout): the allowance before an attempt's pace
  // is known and during saves and evals, and the least timeout once it is.
  std::chrono::seconds default_hang_timeout{600};
  std::chrono::seconds auto_hang_floor{180};
  // checkpoint.every_steps = "auto": the time between failures a campaign expects before its
  // own attempts tell (goodput.h EstimateMtbf); the workers get the estimate in
  // BELAY_CHECKPOINT_MTBF.
  std::chrono::seconds checkpoint_mtbf_prior{4 * 3600};
  // After belayd starts, how long before it judges any attempt hung: the ranks retry their
  // reports with a backoff of up to 30 s (CoordinatorClient) while belayd is away.
  std::chrono::seconds restart_grace{35};
  // After SIGUSR1 for a cancel, how long ranks get to checkpoint before SIGKILL.
  std::chrono::seconds cancel_grace{60};
  // A checkpoint becomes "good" once this many further steps ran without trouble.
  int64_t good_after_steps = 10;
  uint64_t jitter_seed = 0x5eed;  // backoff jitter draws
  // Node reputation and exclusion (Slurm campaigns; node_health.h).
  NodeHealthPolicy node_health;
  // While Slurm campaigns are active, the cluster's node states are copied into the node
  // records this often (one slurmctld call each time).
  std::chrono::seconds node_state_interval{60};
  // Re-hash a checkpoint's shards before a resume on a thread of its own, so that hashing a
  // large checkpoint holds up no other campaign and no worker call (the attempt waits for the
  // result over the next rounds); false: in the supervision round itself.
  bool verify_in_background = true;
  // Each attempt's ranks run as the campaign's owner (sched::JobSpec::run_as_uid); for a
  // belayd running as root. false: as belayd's own user.
  bool run_as_owner = false;
  // The secret attempt tokens are derived from (AttemptTokens, 32 bytes; belayd keeps it in
  // its state directory so that a restarted belayd knows its running attempts' tokens).
  // Empty: a random key of this Supervisor's own.
  std::string token_key;
  // The slow-rank accounting of a running attempt (each rank's summed compute time, O(world
  // size)) is written to the store at most this often, so that a restarted belayd still has
  // it; the steps since the last write are not in it.
  std::chrono::seconds rank_sums_interval{60};
  // The last this many step reports of an attempt are kept whole in memory (with every rank's
  // times) and written as evidence when the attempt ends by a failure (NaN, hang, crash, node
  // failure, out of memory); step records in the store keep only summaries.
  size_t evidence_steps = 4;
  // Step reports rewrite the attempt record (its last step and progress time; with the node
  // list of a large job, hundreds of KB) at most this often; the supervisor reads the latest
  // from memory. A restarted belayd finds progress at most this old, far below any hang
  // timeout.
  std::chrono::seconds attempt_write_interval{10};
};

class Supervisor {
 public:
  Supervisor(store::Store& store, sched::Scheduler& scheduler, const Clock& clock,
             SupervisorOptions options);

  // The reputation rules node records are kept by (for reading them as of now).
  const NodeHealthPolicy& node_health() const { return options_.node_health; }

  // Stores a new campaign (SUBMITTED) for a validated spec: the spec as submitted
  // (`spec_toml`, from `spec_file`) and the effective spec, with absolute paths, in the state
  // directory for the workers. The next Tick starts its first attempt.
  absl::StatusOr<pb::Campaign> Submit(const CampaignSpec& spec, std::string spec_toml,
                                      std::string spec_file, uint32_t owner_uid,
                                      std::string owner_name);
  // Asks for the campaign to end CANCELLED: a queued attempt is dropped; a running one gets
  // SIGUSR1 (checkpoint and stop), then SIGKILL after cancel_grace. NotFound; FailedPrecondition
  // when it already ended.
  absl::Status Cancel(const std::string& campaign_id);

  // One reconciliation round over every campaign that has not ended: start due attempts, poll
  // the scheduler once for all running jobs, detect hangs, end attempts and decide what
  // follows. Errors of one campaign are logged to its event log and do not stop the others;
  // a store write error is returned (the store is then read-only and nothing more is done).
  absl::Status Tick();

  // Worker reports, already authenticated for (campaign, attempt). Reports for an attempt that
  // is not the campaign's current one, or has ended, are ignored (OK).
  absl::Status OnStep(const std::string& campaign_id, int32_t attempt, pb::StepMetrics metrics);
  absl::Status OnEval(const std::string& campaign_id, int32_t attempt, pb::EvalMetrics metrics);
  // One rank's shard of a checkpoint is on disk: the first phase of the commit (the report is
  // kept, synced). The report that completes the step commits it — one synced write, once the
  // ranks' tensor slices make a valid shard map — then belayd writes manifest.json beside the
  // shards and applies retention. `metrics` (rank 0's) are the saved step's. Invalid reports
  // (wrong path, rank, a changed sum) are InvalidArgument / FailedPrecondition; reports of an
  // attempt that is not running are ignored (`message` says so).
  using ShardReceipt = checkpoints::ShardReceipt;
  absl::StatusOr<ShardReceipt> OnShard(const std::string& campaign_id, int32_t attempt,
                                       const pb::CheckpointShard& shard,
                                       const pb::StepMetrics* metrics);
  // A save of `step` failed (the workers train on; the previous checkpoint stands).
  absl::Status OnSaveFailed(const std::string& campaign_id, int32_t attempt, int64_t step,
                            const std::string& message);
  // A rank's heartbeat: kept in memory (not in the store) for the hang report.
  void OnHeartbeat(const std::string& campaign_id, int32_t attempt, int32_t rank, int64_t step,
                   pb::WorkerPhase phase);
  // A rank registered from `node` (Slurm's name for it, else its host name): the node its
  // step times are attributed to, kept in the rank's own record (RankRecord.node).
  absl::Status OnRegister(const std::string& campaign_id, int32_t attempt, int32_t rank,
                          const std::string& node);
  // A rank says how it leaves (kept in its RankRecord, synced).
  absl::Status OnFinish(const std::string& campaign_id, int32_t attempt, pb::RankExit exit);

  // Where workers reach belayd, for attempts started from now on (belayd knows its port only
  // once the worker link listens).
  void set_coordinator_address(std::string address) {
    MutexLock lock(&mu_);
    options_.coordinator_address = std::move(address);
  }

  // The attempt whose workers present `token`, if it is one belayd is running.
  struct AttemptRef {
    std::string campaign_id;
    int32_t attempt = 0;
    int32_t world_size = 0;
    std::string resume_dir;  // the checkpoint the attempt starts from; empty: from scratch
    bool operator==(const AttemptRef&) const = default;
  };
  std::optional<AttemptRef> AttemptOfToken(const std::string& token) const;
  // Whether `token` is that of a presubmitted job no attempt has taken over yet: its workers
  // are early and should ask again.
  bool IsWaitingSuccessorToken(const std::string& token) const;
  // Whether attempt `attempt` of campaign `id` is one whose workers belayd takes calls from
  // (its token is live).
  bool IsRunning(const std::string& id, int32_t attempt) const;

 private:
  struct Loaded {
    pb::Campaign campaign;
    CampaignSpec spec;
    std::optional<pb::Attempt> attempt;  // the current one
  };

  absl::StatusOr<Loaded> Load(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Reconcile(Loaded& l, const std::map<std::string, sched::JobStatus>& polled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A campaign without an attempt: its first one queued, or, cancelled, it ends here.
  absl::Status QueueFirstAttempt(Loaded& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StartAttempt(Loaded& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The scheduler runs the job of a STARTING attempt (on `job`'s nodes).
  absl::Status MarkRunning(Loaded& l, const sched::JobStatus& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A running job, each round: a cancel's signals, hang detection, a pending end's kill.
  absl::Status WatchRunning(Loaded& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job of attempt `number` whose worker token has nonce `nonce` (world size and
  // exclusions from the current attempt record).
  sched::JobSpec JobFor(const Loaded& l, int32_t number, const std::string& nonce,
                        bool resume_from_coordinator) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  AttemptRef RefOf(const Loaded& l) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The digest of the token of attempt `attempt` of a campaign with nonce `nonce`.
  std::string DigestOf(const std::string& campaign_id, int32_t attempt,
                       const std::string& nonce) const;
  // [resources] presubmit: queues the next attempt's job behind the running one's.
  absl::Status Presubmit(Loaded& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A queued attempt takes over the job presubmitted for it: its resume checkpoint is
  // verified now and the job is treated as started.
  absl::Status TakeOverPresubmitted(Loaded& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job of the current attempt ended as `job`: PlanAttemptEnd over what the store
  // knows, then CarryOutEnd.
  absl::Status EndAttempt(Loaded& l, const sched::JobStatus& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `p` (with the node records it changes) in one synced batch, then cancels the
  // presubmitted job it gives up.
  absl::Status CarryOutEnd(Loaded& l, const AttemptEndPlan& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SetCampaignState(store::WriteBatch& batch, pb::Campaign& c, pb::CampaignState to,
                                const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  store::Store& store_;
  sched::Scheduler& scheduler_;
  const Clock& clock_;
  SupervisorOptions options_;  // coordinator_address guarded by mu_
  store::EventLog events_;
  const std::unique_ptr<checkpoints::CheckpointFiles> checkpoint_files_;
  checkpoints::CheckpointKeeper checkpoints_;
  AttemptMonitor monitor_;  // heartbeats, pace, slow-rank sums
  NodePlanner nodes_;       // node records, attempt sizes, presubmitted jobs

  mutable Mutex mu_;
  std::map<std::string, CampaignSpec> specs_ ABSL_GUARDED_BY(mu_);  // effective specs, by campaign
  // The token digests (AttemptTokens::Digest) of running attempts, and of presubmitted jobs
  // no attempt has taken over yet.
  const AttemptTokens attempt_tokens_;
  std::unordered_map<std::string, AttemptRef, DigestHash, DigestEqual> tokens_ ABSL_GUARDED_BY(mu_);
  std::unordered_set<std::string, DigestHash, DigestEqual> successor_tokens_ ABSL_GUARDED_BY(mu_);
  // When this Supervisor (this belayd) started: no hang is judged on time before it.
  const TimePoint watching_since_;
  // When a cancel's SIGUSR1 went out, per campaign (not persisted: a restarted belayd sends
  // it again).
  std::map<std::string, TimePoint> cancel_signalled_ ABSL_GUARDED_BY(mu_);
  SplitMix64 jitter_ ABSL_GUARDED_BY(mu_);
};

using store::FromTimestamp;
using store::SetTime;

}  // namespace belay::supervisor

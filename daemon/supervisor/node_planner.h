// The node planner: what belay knows of a Slurm cluster's nodes and how attempts use them.
// It copies the cluster's node states into the node records, sizes each attempt and picks
// the nodes it excludes (node_health.h PlanNodes), updates the nodes' reputation after an
// attempt (failures, persistently slow ranks), and queues the next attempt's job behind the
// running one ([resources] presubmit).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "daemon/scheduler/scheduler.h"
#include "daemon/store/event_log.h"
#include "daemon/store/store.h"
#include "daemon/supervisor/node_health.h"
#include "daemon/supervisor/policy.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// Whether running attempt `a` of campaign `c` (spec `spec`) should have its successor's job
// queued behind its own now: a Slurm campaign with presubmit, not ending, none queued yet.
bool WantsPresubmit(const pb::Campaign& c, const pb::Attempt& a, const CampaignSpec& spec);

// Thread-safe; callers serialise the changes of one campaign.
class NodePlanner {
 public:
  NodePlanner(store::Store& store, sched::Scheduler& scheduler, store::EventLog& events,
              const Clock& clock, NodeHealthPolicy policy, std::chrono::seconds state_interval)
      : store_(store),
        scheduler_(scheduler),
        events_(events),
        clock_(clock),
        policy_(policy),
        state_interval_(state_interval) {}

  const NodeHealthPolicy& policy() const { return policy_; }

  // Copies the scheduler's node states into the node records (the changed ones, one synced
  // write) when the last copy is state_interval old. The scheduler's or the store's error.
  absl::Status RefreshStatesIfDue() ABSL_LOCKS_EXCLUDED(mu_);

  // A Slurm attempt's size and exclusions, once, before its first submission, from the node
  // records; events for a smaller world size and for readmitted nodes go into `b`.
  absl::Status PlanAttempt(store::WriteBatch& b, const pb::Campaign& c, pb::Attempt& a,
                           const CampaignSpec& spec);

  // Node records after attempt `a` of `c` ended as `cls` (Slurm campaigns only), into `b`:
  // its nodes and the failed ones, and the nodes of ranks persistently slower than the rest
  // by `rank_means` (each rank's mean compute time per step; empty: not enough steps). An
  // event for each slow node and for the nodes that become excluded.
  absl::Status RecordHealth(store::WriteBatch& b, const pb::Campaign& c, const pb::Attempt& a,
                            const Classification& cls, const std::vector<double>& rank_means);

  // Before the next attempt's job is queued behind running attempt `a`: the token nonce it
  // gets, written first (synced), so that a retried submission after a crash finds the same
  // job.
  absl::Status PrepareSuccessor(pb::Attempt& a);
  // Queues `job` (the next attempt's, with PrepareSuccessor's nonce) behind the job of `a`.
  // Its id once queued (kept in `a`, written); nullopt when the scheduler cannot be reached
  // (next round) or refused it (`a` says so from now on, with an event).
  absl::StatusOr<std::optional<std::string>> Presubmit(const pb::Campaign& c, pb::Attempt& a,
                                                       sched::JobSpec job);

 private:
  store::Store& store_;
  sched::Scheduler& scheduler_;
  store::EventLog& events_;
  const Clock& clock_;
  const NodeHealthPolicy policy_;
  const std::chrono::seconds state_interval_;

  Mutex mu_;
  std::optional<TimePoint> states_at_ ABSL_GUARDED_BY(mu_);  // the last copy of node states
};

}  // namespace belay::supervisor

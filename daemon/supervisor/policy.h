// The supervisor's decisions as pure functions: which state changes are allowed, why an
// attempt ended, and what happens next (DESIGN.md's end-reason table). No I/O: the
// Supervisor (supervisor.h) persists and acts on what these return.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "daemon/scheduler/scheduler.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// The allowed transitions, as tables:
//   campaign  SUBMITTED → RUNNING | COMPLETED | FAILED | CANCELLED
//             RUNNING → RECOVERING | COMPLETED | FAILED | CANCELLED
//             RECOVERING → RUNNING | COMPLETED | FAILED | CANCELLED
//   attempt   QUEUED → STARTING | ENDED;  STARTING → RUNNING | ENDED;  RUNNING → ENDED
// Terminal states have no way out. Staying in the same state is not a transition.
bool CampaignTransitionAllowed(pb::CampaignState from, pb::CampaignState to);
bool AttemptTransitionAllowed(pb::AttemptState from, pb::AttemptState to);
bool IsTerminal(pb::CampaignState state);

// Names for people: "running", "rank_crash" (the enum value without its prefix, lower case).
std::string Name(pb::CampaignState state);
std::string Name(pb::AttemptState state);
std::string Name(pb::EndReason reason);
std::string Name(pb::CheckpointState state);

// What the supervisor knows when an attempt's job has ended.
struct EndEvidence {
  sched::JobStatus job;                   // the scheduler's view (rank exits, its own reason)
  std::vector<pb::RankExit> finishes;     // what ranks said as they left (WorkerLink Finish)
  bool killed_for_hang = false;           // the supervisor killed it: no progress
  bool cancel_requested = false;          // the user cancelled the campaign
  std::optional<pb::EndReason> reported;  // a reason a step report established (nan, loss_spike)
  int world_size = 1;
};

struct Classification {
  pb::EndReason reason = pb::END_REASON_UNSPECIFIED;
  std::string message;  // for the event log: what happened, naming ranks and nodes
  std::vector<std::string> failed_nodes;
};

// Why the attempt ended. In order: the supervisor's own hang kill; a user cancel; the
// scheduler's reason (time limit, node failure, preemption, ...); a reason from step reports
// (nan, loss spike); a rank's reported error reason (bad spec, missing data, out of memory);
// all ranks reporting completion; a rank that checkpointed for its time limit; a rank that
// exited non-zero or was killed (rank_crash, naming the first such rank); otherwise ranks
// that exited 0 without reporting why (rank_crash).
Classification Classify(const EndEvidence& evidence);

enum class NextStep {
  kComplete,  // the campaign is done
  kRestart,   // another attempt, after `delay`
  kFail,      // the campaign fails with `fail_reason`
  kCancel,    // the campaign ends CANCELLED
};

struct Decision {
  NextStep next = NextStep::kFail;
  std::chrono::seconds delay{0};
  bool counts_as_restart = false;                          // against max_restarts
  bool counts_as_rollback = false;                         // against max_rollbacks
  bool counts_as_node_failure = false;                     // against max_node_failures
  pb::EndReason fail_reason = pb::END_REASON_UNSPECIFIED;  // kFail: the campaign's end reason
  std::string message;                                     // why, for the event log
};

// What follows an attempt that ended for `reason`, given the campaign's counters and the
// attempts before it (ascending; `ended` is the last). `jitter` in [-1, 1] picks the point in
// the backoff's jitter range (the caller draws it; tests fix it).
//   completed → complete; cancelled_by_user → cancel; bad_spec, missing_data → fail;
//   time_limit, preempted, cancelled_externally, daemon_lost → restart now, not counted;
//   node_failure → restart now, counted against max_node_failures;
//   nan, loss_spike → fail if nan_policy = stop, else restart now, counted against
//     max_rollbacks;
//   rank_crash, hang, out_of_memory, scheduler_rejected → restart after backoff, counted
//     against max_restarts — unless it is a crash loop: the same reason as the attempt before
//     and no new checkpoint since this attempt started (fail: crash_loop).
// Budgets: the restart that would exceed a budget fails the campaign instead
// (restarts_exhausted, rollbacks_exhausted, or — node failures — restarts_exhausted).
// Backoff for the n-th consecutive counted failure: min(max, initial · 2^(n−1)), then
// scaled by (1 + jitter · backoff.jitter).
Decision Decide(pb::EndReason reason, const pb::Campaign& campaign,
                const std::vector<pb::Attempt>& attempts, const RestartSpec& restart,
                double jitter);

// What an attempt's step reports have shown so far, for hang_timeout = "auto".
struct StepPace {
  int64_t steps = 0;            // step reports received in this attempt
  double median_step_s = 0;     // median of the recent reported step times
  double longest_gap_s = 0;     // longest wait between two step reports after the first
                                // kPaceSteps (saves and evals included)
  bool busy_elsewhere = false;  // a rank's last heartbeat says checkpoint or eval
};
struct HangAllowance {
  std::chrono::seconds startup{600};  // before kPaceSteps steps, and during saves and evals
  std::chrono::seconds floor{180};    // never less than this once the pace is known
};
inline constexpr int64_t kPaceSteps = 10;
// The hang timeout "auto" means: until the attempt has reported kPaceSteps steps, or while a
// rank says it is checkpointing or evaluating, `startup`; after that the largest of `floor`,
// 20 × the median step time and 3 × the longest gap between step reports seen so far (which
// covers the attempt's own saves and evals), in whole seconds rounded up.
std::chrono::seconds AutoHangTimeout(const StepPace& pace, const HangAllowance& allowance);

}  // namespace belay::supervisor

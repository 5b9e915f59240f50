// Transition tables, end-reason classification and the restart policy.
#include "daemon/supervisor/policy.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <utility>

#include "belay/v1/enum_names.h"
#include "common/strings.h"

namespace belay::supervisor {
namespace {

using CS = pb::CampaignState;
using AS = pb::AttemptState;

constexpr std::pair<CS, CS> kCampaignTransitions[] = {
    {pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_RUNNING},
    {pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_COMPLETED},
    {pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_FAILED},
    {pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_CANCELLED},
    {pb::CAMPAIGN_STATE_RUNNING, pb::CAMPAIGN_STATE_RECOVERING},
    {pb::CAMPAIGN_STATE_RUNNING, pb::CAMPAIGN_STATE_COMPLETED},
    {pb::CAMPAIGN_STATE_RUNNING, pb::CAMPAIGN_STATE_FAILED},
    {pb::CAMPAIGN_STATE_RUNNING, pb::CAMPAIGN_STATE_CANCELLED},
    {pb::CAMPAIGN_STATE_RECOVERING, pb::CAMPAIGN_STATE_RUNNING},
    {pb::CAMPAIGN_STATE_RECOVERING, pb::CAMPAIGN_STATE_COMPLETED},
    {pb::CAMPAIGN_STATE_RECOVERING, pb::CAMPAIGN_STATE_FAILED},
    {pb::CAMPAIGN_STATE_RECOVERING, pb::CAMPAIGN_STATE_CANCELLED},
};

constexpr std::pair<AS, AS> kAttemptTransitions[] = {
    {pb::ATTEMPT_STATE_QUEUED, pb::ATTEMPT_STATE_STARTING},
    {pb::ATTEMPT_STATE_QUEUED, pb::ATTEMPT_STATE_ENDED},
    {pb::ATTEMPT_STATE_STARTING, pb::ATTEMPT_STATE_RUNNING},
    {pb::ATTEMPT_STATE_STARTING, pb::ATTEMPT_STATE_ENDED},
    {pb::ATTEMPT_STATE_RUNNING, pb::ATTEMPT_STATE_ENDED},
};

std::string RankEndText(const sched::RankEnd& e) {
  if (e.signal != 0) return Cat("rank ", e.rank, " killed by signal ", e.signal);
  if (e.exit_code) return Cat("rank ", e.rank, " exited with status ", *e.exit_code);
  return Cat("rank ", e.rank, " ended without a status");
}

bool Counted(pb::EndReason r) {
  return r == pb::END_REASON_RANK_CRASH || r == pb::END_REASON_HANG ||
         r == pb::END_REASON_OUT_OF_MEMORY || r == pb::END_REASON_SCHEDULER_REJECTED;
}

}  // namespace

std::string Name(pb::CampaignState s) { return pb::ShortName(s); }
std::string Name(pb::AttemptState s) { return pb::ShortName(s); }
std::string Name(pb::EndReason r) { return pb::ShortName(r); }
std::string Name(pb::CheckpointState s) { return pb::ShortName(s); }

bool CampaignTransitionAllowed(CS from, CS to) {
  return std::find(std::begin(kCampaignTransitions), std::end(kCampaignTransitions),
                   std::pair{from, to}) != std::end(kCampaignTransitions);
}

bool AttemptTransitionAllowed(AS from, AS to) {
  return std::find(std::begin(kAttemptTransitions), std::end(kAttemptTransitions),
                   std::pair{from, to}) != std::end(kAttemptTransitions);
}

bool IsTerminal(CS s) {
  return s == pb::CAMPAIGN_STATE_COMPLETED || s == pb::CAMPAIGN_STATE_FAILED ||
         s == pb::CAMPAIGN_STATE_CANCELLED;
}

Classification Classify(const EndEvidence& ev) {
  Classification c;
  c.failed_nodes.clear();
  if (ev.killed_for_hang) {
    c.reason = pb::END_REASON_HANG;
    c.message = "no step progress within hang_timeout; the job was killed";
    return c;
  }
  if (ev.cancel_requested) {
    c.reason = pb::END_REASON_CANCELLED_BY_USER;
    c.message = "cancelled by the user";
    return c;
  }
  if (ev.job.reason != pb::END_REASON_UNSPECIFIED) {
    c.reason = ev.job.reason;
    c.message = ev.job.message;
    if (c.reason == pb::END_REASON_NODE_FAILURE) c.failed_nodes = ev.job.nodes;
    return c;
  }
  if (ev.reported) {
    c.reason = *ev.reported;
    c.message = Cat("step reports: ", Name(*ev.reported));
    return c;
  }
  std::vector<pb::RankExit> finishes = ev.finishes;
  std::sort(finishes.begin(), finishes.end(),
            [](const pb::RankExit& a, const pb::RankExit& b) { return a.rank() < b.rank(); });
  for (const pb::RankExit& f : finishes) {
    if (f.exit_kind() == pb::EXIT_KIND_ERROR && f.error_reason() != pb::END_REASON_UNSPECIFIED) {
      c.reason = f.error_reason();
      c.message = Cat("rank ", f.rank(), ": ", f.message());
      return c;
    }
  }
  int completed = 0;
  for (const pb::RankExit& f : finishes) completed += f.exit_kind() == pb::EXIT_KIND_COMPLETED;
  if (completed == ev.world_size && ev.world_size > 0) {
    c.reason = pb::END_REASON_COMPLETED;
    c.message = "all ranks reported the last step";
    return c;
  }
  for (const pb::RankExit& f : finishes) {
    if (f.exit_kind() == pb::EXIT_KIND_TIME_LIMIT_CHECKPOINTED) {
      c.reason = pb::END_REASON_TIME_LIMIT;
      c.message =
          Cat("rank ", f.rank(), " checkpointed at step ", f.last_step(), " for the time limit");
      return c;
    }
  }
  for (const sched::RankEnd& e : ev.job.ranks) {
    if (e.signal != 0 || (e.exit_code && *e.exit_code != 0)) {
      c.reason = pb::END_REASON_RANK_CRASH;
      c.message = RankEndText(e);
      if (!e.node.empty()) c.message += Cat(" on ", e.node);
      return c;
    }
  }
  c.reason = pb::END_REASON_RANK_CRASH;
  c.message = ev.job.ranks.empty() ? Cat("the job ended: ", ev.job.message)
                                   : "ranks exited without reporting completion";
  return c;
}

Decision Decide(pb::EndReason reason, const pb::Campaign& campaign,
                const std::vector<pb::Attempt>& attempts, const RestartSpec& restart,
                double jitter) {
  Decision d;
  const std::string why = Name(reason);
  auto fail = [&d](pb::EndReason r, std::string message) {
    d.next = NextStep::kFail;
    d.fail_reason = r;
    d.message = std::move(message);
    return d;
  };
  switch (reason) {
    case pb::END_REASON_COMPLETED:
      d.next = NextStep::kComplete;
      d.message = "campaign completed";
      return d;
    case pb::END_REASON_CANCELLED_BY_USER:
      d.next = NextStep::kCancel;
      d.message = "campaign cancelled";
      return d;
    case pb::END_REASON_BAD_SPEC:
    case pb::END_REASON_MISSING_DATA:
      return fail(reason, Cat(why, ": not retried"));
    case pb::END_REASON_TIME_LIMIT:
    case pb::END_REASON_PREEMPTED:
    case pb::END_REASON_CANCELLED_EXTERNALLY:
    case pb::END_REASON_DAEMON_LOST:
      d.next = NextStep::kRestart;
      d.message = Cat(why, ": next attempt now (not counted against max_restarts)");
      return d;
    case pb::END_REASON_NODE_FAILURE:
      if (campaign.node_failures() + 1 > restart.max_node_failures) {
        return fail(pb::END_REASON_RESTARTS_EXHAUSTED,
                    Cat("node failure ", campaign.node_failures() + 1,
                        " exceeds max_node_failures = ", restart.max_node_failures));
      }
      d.next = NextStep::kRestart;
      d.counts_as_node_failure = true;
      d.message = "node failure: next attempt now without the failed node";
      return d;
    case pb::END_REASON_NAN:
    case pb::END_REASON_LOSS_SPIKE:
      if (restart.nan_policy == NanPolicy::kStop) {
        return fail(reason, Cat(why, " with nan_policy = \"stop\""));
      }
      if (campaign.rollbacks_used() + 1 > restart.max_rollbacks) {
        return fail(pb::END_REASON_ROLLBACKS_EXHAUSTED,
                    Cat(why, ": rollback ", campaign.rollbacks_used() + 1,
                        " exceeds max_rollbacks = ", restart.max_rollbacks));
      }
      d.next = NextStep::kRestart;
      d.counts_as_rollback = true;
      d.message = Cat(why, ": rolling back to the last good checkpoint");
      return d;
    default:
      break;
  }
  // Counted failures: crash loop, budget, backoff.
  if (!Counted(reason)) {
    return fail(reason, Cat(why, ": no rule restarts after it"));
  }
  if (attempts.size() >= 2) {
    const pb::Attempt& ended = attempts.back();
    const pb::Attempt& before = attempts[attempts.size() - 2];
    const bool progress = campaign.has_last_checkpoint_step() &&
                          (!ended.has_start_checkpoint_step() ||
                           campaign.last_checkpoint_step() > ended.start_checkpoint_step());
    if (before.end_reason() == reason && !progress) {
      return fail(
          pb::END_REASON_CRASH_LOOP,
          Cat("crash loop: ", why, " again (attempts ", before.number(), " and ", ended.number(),
              ") with no checkpoint since attempt ", ended.number(), " started"));
    }
  }
  if (campaign.restarts_used() + 1 > restart.max_restarts) {
    return fail(pb::END_REASON_RESTARTS_EXHAUSTED,
                Cat(why, ": restart ", campaign.restarts_used() + 1,
                    " exceeds max_restarts = ", restart.max_restarts));
  }
  // Consecutive counted failures, this one included.
  int streak = 0;
  for (auto it = attempts.rbegin(); it != attempts.rend() && Counted(it->end_reason()); ++it)
    ++streak;
  streak = std::max(streak, 1);
  double base = static_cast<double>(restart.backoff.initial.count()) *
                std::ldexp(1.0, std::min(streak - 1, 30));
  base = std::min(base, static_cast<double>(restart.backoff.max.count()));
  const double j = std::clamp(jitter, -1.0, 1.0) * restart.backoff.jitter;
  d.delay =
      std::chrono::seconds(static_cast<int64_t>(std::llround(std::max(0.0, base * (1.0 + j)))));
  d.next = NextStep::kRestart;
  d.counts_as_restart = true;
  d.message = Cat(why, ": restart ", campaign.restarts_used() + 1, " of ", restart.max_restarts,
                  " in ", d.delay.count(), " s");
  return d;
}

std::chrono::seconds AutoHangTimeout(const StepPace& pace, const HangAllowance& allowance) {
  if (pace.steps < kPaceSteps || pace.busy_elsewhere) return allowance.startup;
  const double seconds = std::max({static_cast<double>(allowance.floor.count()),
                                   20.0 * pace.median_step_s, 3.0 * pace.longest_gap_s});
  return std::chrono::seconds(static_cast<int64_t>(std::ceil(seconds)));
}

}  // namespace belay::supervisor

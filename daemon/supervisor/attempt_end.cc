// PlanAttemptEnd: Classify and Decide (policy.h), then the records and events that follow.
#include "daemon/supervisor/attempt_end.h"

#include "common/strings.h"
#include "daemon/store/event_log.h"

namespace belay::supervisor {
namespace {

using store::SetTime;

// Classification of the end of `a`, with what the records add to the scheduler's view.
Classification ClassifyEnd(const pb::Campaign& c, const pb::Attempt& a,
                           const AttemptEndFacts& facts) {
  EndEvidence ev;
  ev.job = facts.job;
  ev.finishes = facts.finishes;
  ev.killed_for_hang = a.end_reason() == pb::END_REASON_HANG;
  ev.cancel_requested = c.cancel_requested();
  if (a.end_reason() == pb::END_REASON_NAN || a.end_reason() == pb::END_REASON_LOSS_SPIKE)
    ev.reported = a.end_reason();
  ev.world_size = a.world_size();
  Classification cls = Classify(ev);
  if (cls.reason == pb::END_REASON_HANG) cls.message = a.end_message();
  if (cls.reason == pb::END_REASON_RANK_CRASH && c.total_steps() > 0 &&
      c.current_step() >= c.total_steps() && ev.finishes.empty()) {
    cls.reason = pb::END_REASON_COMPLETED;  // ranks that reached the last step and exited 0
    cls.message = "ranks reached the last step";
  }
  return cls;
}

// The attempt after `a` (restart decision `d`), taking over its presubmitted job with
// `take_over`; which checkpoint it resumes from follows the campaign `c`.
pb::Attempt NextAttempt(const pb::Campaign& c, const pb::Attempt& a, const Decision& d,
                        bool take_over, TimePoint now) {
  pb::Attempt next;
  next.set_campaign_id(c.id());
  next.set_number(a.number() + 1);
  next.set_state(pb::ATTEMPT_STATE_QUEUED);
  next.set_world_size(a.world_size());
  next.set_ranks_per_node(a.ranks_per_node());
  next.set_scheduler(a.scheduler());
  SetTime(next.mutable_queue_time(), now + d.delay);  // not started before
  if (take_over) {
    next.set_presubmitted(true);
    next.set_worker_token_nonce(a.successor_token_nonce());
    next.set_scheduler_job_id(a.successor_job_id());
    for (const std::string& n : a.excluded_nodes()) next.add_excluded_nodes(n);
  }
  // Otherwise which nodes it avoids is decided when it is submitted, from the node records.
  if (d.counts_as_rollback && c.has_last_good_checkpoint_step()) {
    next.set_start_checkpoint_step(c.last_good_checkpoint_step());
  } else if (!d.counts_as_rollback && c.has_last_checkpoint_step()) {
    next.set_start_checkpoint_step(c.last_checkpoint_step());
  }
  return next;
}

// The campaign's state changes after decision `d` (for the end reason `reason`), into `p`.
absl::Status PlanCampaignState(AttemptEndPlan& p, pb::EndReason reason, TimePoint now) {
  pb::Campaign& c = p.campaign;
  const Decision& d = p.decision;
  std::vector<std::pair<pb::CampaignState, std::string>> moves;
  switch (d.next) {
    case NextStep::kComplete:
      c.set_end_reason(pb::END_REASON_COMPLETED);
      moves.emplace_back(pb::CAMPAIGN_STATE_COMPLETED, d.message);
      break;
    case NextStep::kCancel:
      c.set_end_reason(pb::END_REASON_CANCELLED_BY_USER);
      moves.emplace_back(pb::CAMPAIGN_STATE_CANCELLED, d.message);
      break;
    case NextStep::kFail:
      c.set_end_reason(d.fail_reason);
      c.set_end_message(d.message);
      moves.emplace_back(pb::CAMPAIGN_STATE_FAILED, d.message);
      break;
    case NextStep::kRestart:
      if (c.state() == pb::CAMPAIGN_STATE_SUBMITTED)
        moves.emplace_back(pb::CAMPAIGN_STATE_RUNNING, "");
      moves.emplace_back(pb::CAMPAIGN_STATE_RECOVERING, Name(reason));
      break;
  }
  for (const auto& [to, why] : moves) {
    if (c.state() == to) continue;
    absl::StatusOr<PlannedEvent> e = ChangeCampaignState(c, to, why, now);
    if (!e.ok()) return e.status();
    p.events.push_back(std::move(*e));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PlannedEvent> ChangeCampaignState(pb::Campaign& c, pb::CampaignState to,
                                                 const std::string& why, TimePoint now) {
  if (!CampaignTransitionAllowed(c.state(), to)) {
    return absl::InternalError(
        Cat("campaign ", c.id(), ": no transition from ", Name(c.state()), " to ", Name(to)));
  }
  PlannedEvent e{pb::EVENT_KIND_CAMPAIGN_STATE_CHANGED,
                 to == pb::CAMPAIGN_STATE_FAILED ? pb::SEVERITY_ERROR : pb::SEVERITY_INFO,
                 Cat(Name(c.state()), " -> ", Name(to), why.empty() ? "" : ": ", why), 0};
  c.set_state(to);
  SetTime(c.mutable_update_time(), now);
  if (IsTerminal(to)) SetTime(c.mutable_end_time(), now);
  return e;
}

absl::StatusOr<AttemptEndPlan> PlanAttemptEnd(const pb::Campaign& campaign,
                                              const pb::Attempt& attempt,
                                              const RestartSpec& restart,
                                              const AttemptEndFacts& facts) {
  AttemptEndPlan p;
  p.campaign = campaign;
  p.ended = attempt;
  pb::Campaign& c = p.campaign;
  pb::Attempt& a = p.ended;
  p.cls = ClassifyEnd(c, a, facts);
  const Classification& cls = p.cls;
  a.set_state(pb::ATTEMPT_STATE_ENDED);
  a.set_end_reason(cls.reason);
  a.set_end_message(cls.message);
  SetTime(a.mutable_end_time(), facts.now);
  for (const std::string& n : cls.failed_nodes) a.add_failed_nodes(n);

  std::vector<pb::Attempt> history = facts.history;
  for (pb::Attempt& h : history) {
    if (h.number() == a.number()) h = a;
  }
  p.decision = Decide(cls.reason, c, history, restart, facts.jitter);
  const Decision& d = p.decision;
  a.set_counted_as_restart(d.counts_as_restart);
  if (d.counts_as_restart) c.set_restarts_used(c.restarts_used() + 1);
  if (d.counts_as_rollback) c.set_rollbacks_used(c.rollbacks_used() + 1);
  if (d.counts_as_node_failure) c.set_node_failures(c.node_failures() + 1);

  // The presubmitted job is taken over when the next attempt needs nothing different: it
  // continues at once after a time limit or a preemption, on the same nodes and size.
  // Otherwise (another attempt size or exclusions, a backoff, the campaign's end) it goes.
  const bool take_over =
      !a.successor_job_id().empty() && d.next == NextStep::kRestart && d.delay.count() == 0 &&
      (cls.reason == pb::END_REASON_TIME_LIMIT || cls.reason == pb::END_REASON_PREEMPTED);
  if (!a.successor_job_id().empty() && !take_over) {
    p.cancel_job = a.successor_job_id();
    p.events.push_back({pb::EVENT_KIND_ATTEMPT_ENDED, pb::SEVERITY_INFO,
                        Cat("presubmitted job ", p.cancel_job, " cancelled: attempt ", a.number(),
                            " ended ", Name(cls.reason)),
                        a.number()});
  }
  const bool bad = cls.reason != pb::END_REASON_COMPLETED &&
                   cls.reason != pb::END_REASON_TIME_LIMIT &&
                   cls.reason != pb::END_REASON_CANCELLED_BY_USER;
  p.events.push_back({pb::EVENT_KIND_ATTEMPT_ENDED, bad ? pb::SEVERITY_WARNING : pb::SEVERITY_INFO,
                      Cat("attempt ", a.number(), " ended: ", Name(cls.reason), ": ", cls.message,
                          "; ", d.message),
                      a.number()});
  if (absl::Status s = PlanCampaignState(p, cls.reason, facts.now); !s.ok()) return s;
  if (d.next == NextStep::kRestart) {
    pb::Attempt next = NextAttempt(c, a, d, take_over, facts.now);
    if (d.counts_as_rollback) {
      p.rollback_to = next.has_start_checkpoint_step() ? next.start_checkpoint_step() : -1;
    }
    c.set_current_attempt(next.number());
    p.queued =
        PlannedEvent{pb::EVENT_KIND_ATTEMPT_QUEUED, pb::SEVERITY_INFO,
                     Cat("attempt ", next.number(), " queued",
                         next.has_start_checkpoint_step()
                             ? Cat(" to resume from step ", next.start_checkpoint_step())
                             : " to start from step 0",
                         d.delay.count() > 0 ? Cat(", starts in ", d.delay.count(), " s") : "",
                         take_over ? Cat(", as presubmitted job ", next.scheduler_job_id()) : ""),
                     next.number()};
    p.next = std::move(next);
  }
  SetTime(c.mutable_update_time(), facts.now);
  p.incident = cls.reason == pb::END_REASON_NAN || cls.reason == pb::END_REASON_LOSS_SPIKE ||
               cls.reason == pb::END_REASON_HANG || cls.reason == pb::END_REASON_RANK_CRASH ||
               cls.reason == pb::END_REASON_NODE_FAILURE ||
               cls.reason == pb::END_REASON_OUT_OF_MEMORY;
  return p;
}

}  // namespace belay::supervisor

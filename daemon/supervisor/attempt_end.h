// What follows when an attempt's job has ended, as a pure function: from the campaign, the
// attempt and what happened, the records as they become, the events to log, and what the
// supervisor then does (a rollback, the next attempt, a presubmitted job to cancel). The
// Supervisor writes the plan in one synced batch and acts on it after.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "common/clock.h"
#include "daemon/supervisor/policy.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// An event for the campaign's log, as planned.
struct PlannedEvent {
  pb::EventKind kind = pb::EVENT_KIND_UNSPECIFIED;
  pb::Severity severity = pb::SEVERITY_INFO;
  std::string message;
  int32_t attempt = 0;
  bool operator==(const PlannedEvent&) const = default;
};

// Campaign `c` moves to `to` for `why` (update and, for an end, end time `now`); the event
// that says so. Internal when the transition table does not allow it (c is unchanged).
absl::StatusOr<PlannedEvent> ChangeCampaignState(pb::Campaign& c, pb::CampaignState to,
                                                 const std::string& why, TimePoint now);

// What is known when the job of a campaign's current attempt has ended.
struct AttemptEndFacts {
  sched::JobStatus job;
  std::vector<pb::RankExit> finishes;  // what ranks said as they left
  std::vector<pb::Attempt> history;    // the campaign's attempts, ascending, as stored
  double jitter = 0;                   // in [-1, 1], for the backoff
  TimePoint now;
};

struct AttemptEndPlan {
  pb::Campaign campaign;  // counters, state, end reason, current attempt, update time
  pb::Attempt ended;      // the attempt, ENDED with its reason
  Classification cls;
  Decision decision;
  // In this order: `events`, then (a rollback) the checkpoints after `rollback_to` given up
  // (-1: all; the campaign's last checkpoint follows), then `next` queued with `queued`.
  std::vector<PlannedEvent> events;
  std::optional<int64_t> rollback_to;
  std::optional<pb::Attempt> next;
  std::optional<PlannedEvent> queued;
  // The presubmitted job that goes (empty: none, or the next attempt takes it over).
  std::string cancel_job;
  // A failure whose last step reports are worth keeping whole.
  bool incident = false;
};

// The end of attempt `a` of campaign `c` (its restart rules `restart`). Internal only for a
// state change the transition table refuses.
absl::StatusOr<AttemptEndPlan> PlanAttemptEnd(const pb::Campaign& c, const pb::Attempt& a,
                                              const RestartSpec& restart,
                                              const AttemptEndFacts& facts);

}  // namespace belay::supervisor

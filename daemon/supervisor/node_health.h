// Node reputation as pure functions over the stored pb::Node record: failures attributed to
// a node lower its reputation, the penalty decays with time so a repaired node returns, and a
// node whose penalty crosses a threshold is kept off new submissions for a while. The
// Supervisor persists what these return in the same write as the attempt's end.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "belay/v1/types.pb.h"
#include "common/clock.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

struct NodeHealthPolicy {
  // The penalty (−ln reputation) halves every half_life without new failures.
  std::chrono::seconds half_life{std::chrono::hours(24)};
  // A node is excluded when its penalty reaches this (one node failure does).
  double exclude_at = 1.0;
  // First exclusion; each further failure while the penalty is high doubles it, up to max.
  std::chrono::seconds base_exclusion{std::chrono::hours(1)};
  std::chrono::seconds max_exclusion{std::chrono::hours(24)};
};

// How much one failure of this kind, attributed to a node, adds to its penalty: 1 for a node
// failure (Slurm NODE_FAIL, a node down), 0.5 for a rank that crashed or hung there, 0.25 for
// a rank that was persistently slow there; 0 for reasons that say nothing about the node.
double FailureWeight(pb::EndReason reason);

// The record as of `now`: the penalty decayed since update_time (reputation recovers), an
// exclusion whose time has passed lifted. Pure; sets update_time to now when it changes.
pb::Node Decayed(const pb::Node& node, TimePoint now, const NodeHealthPolicy& policy);

// The record after an attempt that ran on the node ended; `failure` is the reason attributed
// to this node, or UNSPECIFIED when the node is not blamed. Decays first. Excludes the node
// when its penalty reaches exclude_at (exclusion_reason says why, excluded_until when it lapses).
pb::Node AfterAttempt(const pb::Node& node, pb::EndReason failure, TimePoint now,
                      const NodeHealthPolicy& policy);

// Whether new submissions should avoid the node at `now`.
bool ExcludedAt(const pb::Node& node, TimePoint now);

// The names of the nodes to avoid at `now`, sorted.
std::vector<std::string> ExcludedNodes(const std::vector<pb::Node>& nodes, TimePoint now);

}  // namespace belay::supervisor

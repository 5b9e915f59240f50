// Node reputation as pure functions over the stored pb::Node record: failures attributed to
// a node lower its reputation, the penalty decays with time so a repaired node returns, and a
// node whose penalty crosses a threshold is kept off new submissions for a while. The
// Supervisor persists what these return in the same write as the attempt's end.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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
  // A rank is persistently slow when its mean compute time per step over an attempt of at
  // least slow_min_steps steps exceeds slow_factor × the median of the ranks' means.
  double slow_factor = 1.5;
  int64_t slow_min_steps = 20;
};

// Penalty of one attempt with a persistently slow rank on the node.
inline constexpr double kSlowRankWeight = 0.25;

// How much one failure of this kind, attributed to a node, adds to its penalty: 1 for a node
// failure (Slurm NODE_FAIL, a node down), 0.5 for a rank that crashed or hung there; 0 for
// reasons that say nothing about the node. (A persistently slow rank: AfterSlowAttempt.)
double FailureWeight(pb::EndReason reason);

// The record as of `now`: the penalty decayed since update_time (reputation recovers), an
// exclusion whose time has passed lifted. Pure; sets update_time to now when it changes.
pb::Node Decayed(const pb::Node& node, TimePoint now, const NodeHealthPolicy& policy);

// The record after an attempt that ran on the node ended; `failure` is the reason attributed
// to this node, or UNSPECIFIED when the node is not blamed. Decays first. Excludes the node
// when its penalty reaches exclude_at (exclusion_reason says why, excluded_until when it lapses).
pb::Node AfterAttempt(const pb::Node& node, pb::EndReason failure, TimePoint now,
                      const NodeHealthPolicy& policy);

// The record after an attempt in which a rank on the node was persistently slow: decays
// first, adds kSlowRankWeight to the penalty (four such attempts in a row exclude a node).
pb::Node AfterSlowAttempt(const pb::Node& node, TimePoint now, const NodeHealthPolicy& policy);

// The median of `values` (the mean of the middle two for an even count); 0 when empty.
double Median(std::vector<double> values);

// The ranks whose mean compute time per step (`mean_s`, by rank) exceeds
// policy.slow_factor × the median of all ranks' means; none with fewer than 3 ranks (no
// majority to compare against) or a median of 0.
std::vector<int> SlowRanks(const std::vector<double>& mean_s, const NodeHealthPolicy& policy);

// Whether new submissions should avoid the node at `now`.
bool ExcludedAt(const pb::Node& node, TimePoint now);

// The names of the nodes to avoid at `now`, sorted.
std::vector<std::string> ExcludedNodes(const std::vector<pb::Node>& nodes, TimePoint now);

// What the next attempt of a Slurm campaign asks for.
struct NodeRequest {
  int64_t nodes = 1;      // [resources] nodes
  int64_t min_nodes = 1;  // [resources] min_nodes (≤ nodes; nodes: never shrink)
  // Whether an attempt on n nodes is a valid world size (the global batch splits over it).
  std::function<bool(int64_t)> valid = [](int64_t) { return true; };
  std::string partition;       // empty: the cluster's default partition
  bool exclude_failed = true;  // [restart] exclude_failed_nodes
};

struct NodePlan {
  int64_t nodes = 0;                     // how many nodes to ask Slurm for
  std::vector<std::string> exclude;      // nodes to keep the job off (--exclude), sorted
  std::vector<std::string> readmitted;   // excluded nodes used anyway (too few otherwise), sorted
  std::vector<std::string> unavailable;  // the partition's nodes Slurm would not give now, sorted
  int64_t usable = -1;  // nodes of the partition available and not excluded; -1: not known
};

// How many nodes the attempt asks for and which it avoids, from the node records (belay's
// exclusions and the Slurm states last read into them). All `nodes` when enough nodes of the
// partition are usable or when belay knows none of the partition's nodes; otherwise the
// largest valid count down to min_nodes; below min_nodes, the least-penalised excluded nodes
// that Slurm would give are readmitted until min_nodes are usable (better a suspect node than
// no progress), and if Slurm's available nodes are still too few the job asks for min_nodes
// and waits in Slurm's queue for nodes to come back. Pure.
NodePlan PlanNodes(const std::vector<pb::Node>& nodes, TimePoint now, const NodeRequest& request,
                   const NodeHealthPolicy& policy);

}  // namespace belay::supervisor

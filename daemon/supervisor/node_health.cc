// Node reputation with decay and timed exclusion (node_health.h).
#include "daemon/supervisor/node_health.h"

#include <algorithm>
#include <cmath>

#include "common/strings.h"
#include "daemon/supervisor/policy.h"
#include "daemon/supervisor/supervisor.h"

namespace belay::supervisor {
namespace {

double Penalty(const pb::Node& n) {
  const double r = n.reputation();
  if (!(r > 0.0)) return 50.0;  // 0 (underflow) or NaN: as bad as it gets
  return r >= 1.0 ? 0.0 : -std::log(r);
}

// Excludes the node once its penalty reaches exclude_at: for base_exclusion, doubling with
// each unit of penalty above the threshold (a node that keeps failing stays out longer), at
// most max_exclusion; an exclusion already running longer is kept.
void ExcludeIfDue(pb::Node& n, double penalty, TimePoint now, const NodeHealthPolicy& policy,
                  const std::string& why) {
  if (penalty < policy.exclude_at) return;
  const double doublings = std::round(penalty - policy.exclude_at);
  auto length = std::chrono::duration_cast<std::chrono::seconds>(
      policy.base_exclusion * std::exp2(std::min(doublings, 16.0)));
  length = std::min(length, policy.max_exclusion);
  const TimePoint until = now + length;
  if (!n.excluded() || !n.has_excluded_until() || FromTimestamp(n.excluded_until()) < until) {
    SetTime(n.mutable_excluded_until(), until);
  }
  n.set_excluded(true);
  n.set_exclusion_reason(Cat(
      why, " (", n.failures_attributed(), " failure", n.failures_attributed() == 1 ? "" : "s",
      " attributed, ", n.slow_attempts() > 0 ? Cat(n.slow_attempts(), " with a slow rank, ") : "",
      "reputation ", std::round(n.reputation() * 100) / 100, ")"));
}

}  // namespace

double FailureWeight(pb::EndReason reason) {
  switch (reason) {
    case pb::END_REASON_NODE_FAILURE:
      return 1.0;
    case pb::END_REASON_RANK_CRASH:
    case pb::END_REASON_HANG:
      return 0.5;
    default:
      return 0.0;
  }
}

pb::Node Decayed(const pb::Node& node, TimePoint now, const NodeHealthPolicy& policy) {
  pb::Node n = node;
  if (!n.has_update_time()) {
    if (n.reputation() == 0.0 && n.failures_attributed() == 0) n.set_reputation(1.0);  // new record
    SetTime(n.mutable_update_time(), now);
    return n;
  }
  const TimePoint then = FromTimestamp(n.update_time());
  if (now <= then) return n;
  const double elapsed = std::chrono::duration<double>(now - then).count();
  const double half = std::chrono::duration<double>(policy.half_life).count();
  const double penalty = Penalty(n) * std::exp2(-elapsed / half);
  n.set_reputation(std::exp(-penalty));
  if (n.excluded() && n.has_excluded_until() && FromTimestamp(n.excluded_until()) <= now) {
    n.set_excluded(false);
    n.clear_excluded_until();
    n.set_exclusion_reason("");
  }
  SetTime(n.mutable_update_time(), now);
  return n;
}

pb::Node AfterAttempt(const pb::Node& node, pb::EndReason failure, TimePoint now,
                      const NodeHealthPolicy& policy) {
  pb::Node n = Decayed(node, now, policy);
  n.set_attempts_hosted(n.attempts_hosted() + 1);
  const double weight = FailureWeight(failure);
  if (weight <= 0.0) return n;
  const double penalty = Penalty(n) + weight;
  n.set_reputation(std::exp(-penalty));
  n.set_failures_attributed(n.failures_attributed() + 1);
  SetTime(n.mutable_last_failure_time(), now);
  n.set_last_failure_reason(failure);
  ExcludeIfDue(n, penalty, now, policy, std::string(Name(failure)));
  return n;
}

pb::Node AfterSlowAttempt(const pb::Node& node, TimePoint now, const NodeHealthPolicy& policy) {
  pb::Node n = Decayed(node, now, policy);
  const double penalty = Penalty(n) + kSlowRankWeight;
  n.set_reputation(std::exp(-penalty));
  n.set_slow_attempts(n.slow_attempts() + 1);
  ExcludeIfDue(n, penalty, now, policy, "slow ranks");
  return n;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

std::vector<int> SlowRanks(const std::vector<double>& mean_s, const NodeHealthPolicy& policy) {
  std::vector<int> slow;
  if (mean_s.size() < 3) return slow;
  const double median = Median(mean_s);
  if (!(median > 0.0)) return slow;
  for (size_t r = 0; r < mean_s.size(); ++r) {
    if (mean_s[r] > policy.slow_factor * median) slow.push_back(static_cast<int>(r));
  }
  return slow;
}

bool ExcludedAt(const pb::Node& node, TimePoint now) {
  if (!node.excluded()) return false;
  return !node.has_excluded_until() || now < FromTimestamp(node.excluded_until());
}

std::vector<std::string> ExcludedNodes(const std::vector<pb::Node>& nodes, TimePoint now) {
  std::vector<std::string> out;
  for (const pb::Node& n : nodes) {
    if (ExcludedAt(n, now)) out.push_back(n.name());
  }
  std::sort(out.begin(), out.end());
  return out;
}

NodePlan PlanNodes(const std::vector<pb::Node>& nodes, TimePoint now, const NodeRequest& request,
                   const NodeHealthPolicy& policy) {
  NodePlan plan;
  plan.nodes = request.nodes;
  if (request.exclude_failed) plan.exclude = ExcludedNodes(nodes, now);
  std::vector<const pb::Node*> available;
  bool known = false;
  for (const pb::Node& n : nodes) {
    if (n.slurm_state().empty()) continue;  // never seen in Slurm's node list
    const auto& parts = n.slurm_partitions();
    const bool member = request.partition.empty() ? n.slurm_default_partition()
                                                  : std::find(parts.begin(), parts.end(),
                                                              request.partition) != parts.end();
    if (!member) continue;
    known = true;
    if (n.slurm_available()) {
      available.push_back(&n);
    } else {
      plan.unavailable.push_back(n.name());
    }
  }
  std::sort(plan.unavailable.begin(), plan.unavailable.end());
  if (!known) return plan;
  auto excluded = [&](const std::string& name) {
    return std::binary_search(plan.exclude.begin(), plan.exclude.end(), name);
  };
  plan.usable = std::count_if(available.begin(), available.end(),
                              [&](const pb::Node* n) { return !excluded(n->name()); });
  if (plan.usable >= request.nodes) return plan;
  if (plan.usable >= request.min_nodes) {
    plan.nodes = request.min_nodes;
    for (int64_t n = plan.usable; n > request.min_nodes; --n) {
      if (request.valid(n)) {
        plan.nodes = n;
        break;
      }
    }
    return plan;
  }
  // Fewer than min_nodes: readmit excluded but available nodes, the least penalised first.
  std::vector<pb::Node> suspects;
  for (const pb::Node* n : available) {
    if (excluded(n->name())) suspects.push_back(Decayed(*n, now, policy));
  }
  std::sort(suspects.begin(), suspects.end(), [](const pb::Node& x, const pb::Node& y) {
    return x.reputation() != y.reputation() ? x.reputation() > y.reputation() : x.name() < y.name();
  });
  for (const pb::Node& n : suspects) {
    if (plan.usable >= request.min_nodes) break;
    plan.readmitted.push_back(n.name());
    plan.exclude.erase(std::find(plan.exclude.begin(), plan.exclude.end(), n.name()));
    ++plan.usable;
  }
  std::sort(plan.readmitted.begin(), plan.readmitted.end());
  plan.nodes = request.min_nodes;
  return plan;
}

}  // namespace belay::supervisor

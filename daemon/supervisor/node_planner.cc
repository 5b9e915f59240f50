// NodePlanner: node records in, attempt sizes and exclusions out.
#include "daemon/supervisor/node_planner.h"

#include <cmath>
#include <map>
#include <set>

#include "common/strings.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/attempt_tokens.h"
#include "daemon/supervisor/rank_records.h"
#include "fmt/format.h"

namespace belay::supervisor {

using store::Durability;
using store::WriteBatch;

bool WantsPresubmit(const pb::Campaign& c, const pb::Attempt& a, const CampaignSpec& spec) {
  return a.state() == pb::ATTEMPT_STATE_RUNNING && a.end_reason() == pb::END_REASON_UNSPECIFIED &&
         !c.cancel_requested() && spec.resources.presubmit &&
         c.scheduler() == pb::SCHEDULER_KIND_SLURM && a.successor_job_id().empty() &&
         !a.successor_refused();
}

absl::Status NodePlanner::RefreshStatesIfDue() {
  {
    MutexLock lock(&mu_);
    const TimePoint now = clock_.Now();
    if (states_at_ && now - *states_at_ < state_interval_) return absl::OkStatus();
    states_at_ = now;
  }
  absl::StatusOr<std::vector<sched::NodeState>> states = scheduler_.NodeStates();
  if (!states.ok()) return states.status();
  absl::StatusOr<std::vector<pb::Node>> stored =
      store::ListNodes(store_);  // one read, not one per node
  if (!stored.ok()) return stored.status();
  std::map<std::string, pb::Node> records;
  for (pb::Node& n : *stored) records.emplace(n.name(), std::move(n));
  WriteBatch b;
  int changed = 0;
  for (const sched::NodeState& n : *states) {
    if (!store::ValidateId("node name", n.name).ok()) continue;
    auto old = records.find(n.name);
    pb::Node rec;
    if (old != records.end()) {
      rec = old->second;
    } else {
      rec.set_name(n.name);
      rec.set_reputation(1.0);
    }
    const std::string before = rec.SerializeAsString();
    rec.set_slurm_state(n.state);
    rec.set_slurm_available(!n.down && !n.drain);
    rec.clear_slurm_partitions();
    for (const std::string& p : n.partitions) rec.add_slurm_partitions(p);
    rec.set_slurm_default_partition(n.in_default_partition);
    if (old != records.end() && rec.SerializeAsString() == before) continue;
    store::Put(b, rec);
    ++changed;
  }
  if (changed == 0) return absl::OkStatus();
  return store_.Write(b, Durability::kSynced);
}

absl::Status NodePlanner::PlanAttempt(WriteBatch& b, const pb::Campaign& c, pb::Attempt& a,
                                      const CampaignSpec& spec) {
  const ResourcesSpec& r = spec.resources;
  absl::StatusOr<std::vector<pb::Node>> nodes = store::ListNodes(store_);
  if (!nodes.ok()) return nodes.status();
  NodeRequest req;
  req.nodes = r.nodes;
  req.min_nodes = r.min_nodes_or_nodes();
  req.valid = [&](int64_t n) { return spec.grad_accum_steps(n * r.ranks_per_node) > 0; };
  req.partition = r.partition;
  req.exclude_failed = spec.restart.exclude_failed_nodes;
  const NodePlan plan = PlanNodes(*nodes, clock_.Now(), req, policy_);
  a.set_world_size(static_cast<int32_t>(plan.nodes * r.ranks_per_node));
  a.clear_excluded_nodes();
  for (const std::string& n : plan.exclude) a.add_excluded_nodes(n);
  const std::string partition =
      r.partition.empty() ? "the default partition" : Cat("partition ", r.partition);
  if (!plan.readmitted.empty()) {
    if (absl::Status s = events_.Add(
            b, c, pb::EVENT_KIND_NODE_READMITTED, pb::SEVERITY_WARNING,
            Cat("attempt ", a.number(), " uses excluded node",
                plan.readmitted.size() == 1 ? " " : "s ",
                fmt::format("{}", fmt::join(plan.readmitted, ", ")), " again: without ",
                plan.readmitted.size() == 1 ? "it" : "them",
                " fewer than min_nodes = ", req.min_nodes, " nodes of ", partition, " are usable"),
            a.number(), plan.readmitted);
        !s.ok()) {
      return s;
    }
  }
  if (plan.nodes >= r.nodes) return absl::OkStatus();
  std::string why = Cat("only ", plan.usable, " of ", partition, "'s nodes usable");
  if (!plan.unavailable.empty())
    why += Cat("; Slurm has ", fmt::format("{}", fmt::join(plan.unavailable, ", ")),
               " down or drained");
  if (!a.excluded_nodes().empty())
    why += Cat("; belay excludes ", fmt::format("{}", fmt::join(a.excluded_nodes(), ", ")));
  return events_.Add(
      b, c, pb::EVENT_KIND_ATTEMPT_RESIZED, pb::SEVERITY_WARNING,
      Cat("attempt ", a.number(), " runs on ", plan.nodes, " of ", r.nodes, " nodes (",
          a.world_size(), " ranks instead of ", r.world_size(), "): ", why),
      a.number());
}

absl::Status NodePlanner::RecordHealth(WriteBatch& b, const pb::Campaign& c, const pb::Attempt& a,
                                       const Classification& cls,
                                       const std::vector<double>& means) {
  // Only a Slurm campaign's nodes are nodes belay can avoid; the local backend runs here.
  if (c.scheduler() != pb::SCHEDULER_KIND_SLURM) return absl::OkStatus();
  std::set<std::string> names(a.nodes().begin(), a.nodes().end());
  names.insert(cls.failed_nodes.begin(), cls.failed_nodes.end());
  const std::set<std::string> failed(cls.failed_nodes.begin(), cls.failed_nodes.end());
  const TimePoint now = clock_.Now();
  // Persistently slow ranks, over the whole attempt, on the nodes they registered from.
  std::map<std::string, std::vector<int>> slow;  // node -> its slow ranks
  if (!means.empty()) {
    const std::vector<int> slow_ranks = SlowRanks(means, policy_);
    std::map<int32_t, std::string>
        rank_nodes;  // of the slow ranks' attempt, read only when there are some
    if (!slow_ranks.empty()) {
      absl::StatusOr<std::vector<pb::RankRecord>> ranks = RanksOf(store_, a);
      if (!ranks.ok()) return ranks.status();
      for (const pb::RankRecord& r : *ranks) {
        if (!r.node().empty()) rank_nodes[r.rank()] = r.node();
      }
    }
    for (int r : slow_ranks) {
      auto it = rank_nodes.find(r);  // not registered: nowhere to attribute
      if (it != rank_nodes.end() && failed.count(it->second) == 0 &&
          store::ValidateId("node name", it->second).ok()) {
        slow[it->second].push_back(r);
        names.insert(it->second);
      }
    }
  }
  std::vector<std::string> newly_excluded;
  for (const std::string& name : names) {
    if (!store::ValidateId("node name", name).ok()) continue;  // never a key we cannot store
    absl::StatusOr<std::optional<pb::Node>> old = store::GetNode(store_, name);
    if (!old.ok()) return old.status();
    pb::Node before;
    if (old->has_value()) {
      before = **old;
    } else {
      before.set_name(name);
    }
    pb::Node after = AfterAttempt(
        before, failed.count(name) > 0 ? cls.reason : pb::END_REASON_UNSPECIFIED, now, policy_);
    if (auto s = slow.find(name); s != slow.end()) {
      after = AfterSlowAttempt(after, now, policy_);
      std::string ranks;
      for (int r : s->second) {
        ranks += Cat(ranks.empty() ? "" : ", ", r, " (",
                     std::round(means[static_cast<size_t>(r)] * 1000) / 1000, " s)");
      }
      if (absl::Status st = events_.Add(
              b, c, pb::EVENT_KIND_NODE_SLOW, pb::SEVERITY_WARNING,
              Cat("node ", name, ": rank", s->second.size() == 1 ? " " : "s ", ranks,
                  " computed persistently slower than the ranks' median of ",
                  std::round(Median(means) * 1000) / 1000, " s per step in attempt ", a.number(),
                  "; reputation ", std::round(after.reputation() * 100) / 100),
              a.number(), {name});
          !st.ok()) {
        return st;
      }
    }
    if (ExcludedAt(after, now) && !ExcludedAt(before, now)) newly_excluded.push_back(name);
    store::Put(b, after);
  }
  if (newly_excluded.empty()) return absl::OkStatus();
  return events_.Add(
      b, c, pb::EVENT_KIND_NODE_EXCLUDED, pb::SEVERITY_WARNING,
      Cat("node", newly_excluded.size() == 1 ? " " : "s ",
          fmt::format("{}", fmt::join(newly_excluded, ", ")),
          " excluded from new submissions after ", Name(cls.reason), " in attempt ", a.number()),
      a.number(), newly_excluded);
}

absl::Status NodePlanner::PrepareSuccessor(pb::Attempt& a) {
  if (!a.successor_token_nonce().empty()) return absl::OkStatus();
  a.set_successor_token_nonce(AttemptTokens::NewNonce());
  WriteBatch b;
  store::Put(b, a);
  return store_.Write(b, Durability::kSynced);
}

absl::StatusOr<std::optional<std::string>> NodePlanner::Presubmit(const pb::Campaign& c,
                                                                  pb::Attempt& a,
                                                                  sched::JobSpec job) {
  job.after_job = a.scheduler_job_id();
  absl::StatusOr<std::string> id = scheduler_.Submit(job);
  if (absl::IsUnavailable(id.status())) return std::nullopt;  // next round
  WriteBatch b;
  if (!id.ok()) {
    a.set_successor_refused(true);
    store::Put(b, a);
    if (absl::Status s = events_.Add(
            b, c, pb::EVENT_KIND_ATTEMPT_QUEUED, pb::SEVERITY_WARNING,
            Cat("attempt ", a.number() + 1, " could not be presubmitted: ", id.status().message(),
                "; it is submitted when attempt ", a.number(), " ends"),
            a.number());
        !s.ok()) {
      return s;
    }
    if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
    return std::nullopt;
  }
  a.set_successor_job_id(*id);
  store::Put(b, a);
  if (absl::Status s = events_.Add(b, c, pb::EVENT_KIND_ATTEMPT_QUEUED, pb::SEVERITY_INFO,
                                   Cat("attempt ", a.number() + 1, " presubmitted as job ", *id,
                                       ", to start when job ", a.scheduler_job_id(), " ends"),
                                   a.number());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  return *id;
}

}  // namespace belay::supervisor

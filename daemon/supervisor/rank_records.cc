// Rank records, merged with the attempt record of an older belayd.
#include "daemon/supervisor/rank_records.h"

#include <map>
#include <optional>

#include "daemon/store/records.h"

namespace belay::supervisor {
namespace {

// The record of rank `rank` of attempt `attempt` if that attempt is known, has not ended and
// has such a rank; nullopt otherwise.
absl::StatusOr<std::optional<pb::RankRecord>> LiveRank(const store::Store& st,
                                                       const std::string& id, int32_t attempt,
                                                       int32_t rank) {
  absl::StatusOr<std::optional<pb::Attempt>> a = store::GetAttempt(st, id, attempt);
  if (!a.ok()) return a.status();
  if (!a->has_value() || (*a)->state() == pb::ATTEMPT_STATE_ENDED || rank < 0 ||
      rank >= (*a)->world_size()) {
    return std::nullopt;
  }
  absl::StatusOr<pb::RankRecord> r = RankRecordOf(st, id, attempt, rank);
  if (!r.ok()) return r.status();
  return std::move(*r);
}

}  // namespace

absl::StatusOr<pb::RankRecord> RankRecordOf(const store::Store& st, const std::string& id,
                                            int32_t attempt, int32_t rank) {
  absl::StatusOr<std::optional<pb::RankRecord>> r = store::GetRankRecord(st, id, attempt, rank);
  if (!r.ok()) return r.status();
  if (r->has_value()) return std::move(**r);
  pb::RankRecord fresh;
  fresh.set_campaign_id(id);
  fresh.set_attempt_number(attempt);
  fresh.set_rank(rank);
  return fresh;
}

absl::StatusOr<std::vector<pb::RankRecord>> RanksOf(const store::Store& st, const pb::Attempt& a) {
  absl::StatusOr<std::vector<pb::RankRecord>> ranks =
      store::ListRankRecords(st, a.campaign_id(), a.number());
  if (!ranks.ok() || (a.rank_nodes().empty() && a.rank_exits().empty())) return ranks;
  // An attempt an older belayd started: what it learnt is in the attempt record.
  std::map<int32_t, pb::RankRecord> by_rank;
  auto at = [&](int32_t rank) -> pb::RankRecord& {
    pb::RankRecord& r = by_rank[rank];
    r.set_rank(rank);
    return r;
  };
  for (pb::RankRecord& r : *ranks) by_rank[r.rank()] = std::move(r);
  for (const auto& [rank, node] : a.rank_nodes()) {
    if (at(rank).node().empty()) at(rank).set_node(node);
  }
  for (const pb::RankExit& e : a.rank_exits()) {
    if (!at(e.rank()).has_exit()) *at(e.rank()).mutable_exit() = e;
  }
  std::vector<pb::RankRecord> out;
  for (auto& [rank, r] : by_rank) out.push_back(std::move(r));
  return out;
}

absl::Status RecordRankExit(store::Store& st, const std::string& id, int32_t attempt,
                            pb::RankExit exit) {
  absl::StatusOr<std::optional<pb::RankRecord>> r = LiveRank(st, id, attempt, exit.rank());
  if (!r.ok() || !r->has_value()) return r.status();
  *(*r)->mutable_exit() = std::move(exit);
  store::WriteBatch b;
  store::Put(b, **r);
  return st.Write(b, store::Durability::kSynced);
}

absl::Status RecordRankNode(store::Store& st, const std::string& id, int32_t attempt, int32_t rank,
                            const std::string& node) {
  if (node.empty() || node.size() > 256) return absl::OkStatus();
  absl::StatusOr<std::optional<pb::RankRecord>> r = LiveRank(st, id, attempt, rank);
  if (!r.ok() || !r->has_value() || (*r)->node() == node) return r.status();
  (*r)->set_node(node);
  store::WriteBatch b;
  store::Put(b, **r);
  return st.Write(b, store::Durability::kBuffered);
}

}  // namespace belay::supervisor

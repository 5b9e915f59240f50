// Keys and protobuf encoding of the store's records.
#include "daemon/store/records.h"

#include <algorithm>
#include <limits>

#include "absl/strings/escaping.h"
#include "common/strings.h"

namespace belay::store {
namespace {

void AppendBigEndian(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string Prefix(std::string_view campaign) {
  std::string k(campaign);
  k.push_back('\0');
  return k;
}

std::string Numbered(std::string_view campaign, uint64_t n, int bytes) {
  std::string k = Prefix(campaign);
  AppendBigEndian(k, n, bytes);
  return k;
}

template <typename M>
absl::StatusOr<M> Decode(Table table, std::string_view key, const std::string& value) {
  M m;
  if (!m.ParseFromString(value)) {
    return absl::DataLossError(Cat("store table ", TableName(table), ": the value of key \"",
                                   absl::CHexEscape(absl::string_view(key.data(), key.size())),
                                   "\" is not a valid ", M::descriptor()->name()));
  }
  return m;
}

template <typename M>
absl::StatusOr<std::optional<M>> GetOne(const Store& store, Table table, const std::string& key) {
  absl::StatusOr<std::optional<std::string>> v = store.Get(table, key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<M>();
  absl::StatusOr<M> m = Decode<M>(table, key, **v);
  if (!m.ok()) return m.status();
  return std::optional<M>(std::move(*m));
}

template <typename M>
absl::StatusOr<std::vector<M>> ScanAll(const Store& store, Table table, const ScanOptions& o) {
  absl::StatusOr<Entries> entries = store.Scan(table, o);
  if (!entries.ok()) return entries.status();
  std::vector<M> out;
  out.reserve(entries->size());
  for (const auto& [k, v] : *entries) {
    absl::StatusOr<M> m = Decode<M>(table, k, v);
    if (!m.ok()) return m.status();
    out.push_back(std::move(*m));
  }
  return out;
}

ScanOptions PrefixScan(std::string prefix) {
  ScanOptions o;
  o.end = PrefixEnd(prefix);
  o.begin = std::move(prefix);
  return o;
}

}  // namespace

absl::Status ValidateId(std::string_view what, std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError(Cat(what, " is empty"));
  if (id.size() > 256) return absl::InvalidArgumentError(Cat(what, " is longer than 256 bytes"));
  if (id.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(Cat(what, " contains a NUL byte"));
  }
  return absl::OkStatus();
}

std::string CampaignKey(std::string_view id) { return std::string(id); }
std::string AttemptKey(std::string_view c, int32_t n) {
  return Numbered(c, static_cast<uint32_t>(n), 4);
}
std::string CheckpointKey(std::string_view c, int64_t step) {
  return Numbered(c, static_cast<uint64_t>(step), 8);
}
std::string StepMetricsKey(std::string_view c, int64_t step) {
  std::string k = Prefix(c);
  k.push_back('s');
  AppendBigEndian(k, static_cast<uint64_t>(step), 8);
  return k;
}
std::string EvalMetricsKey(std::string_view c, int64_t step, std::string_view dataset) {
  std::string k = Prefix(c);
  k.push_back('e');
  AppendBigEndian(k, static_cast<uint64_t>(step), 8);
  k.append(dataset);
  return k;
}
std::string EventKey(std::string_view c, int64_t seq) {
  return Numbered(c, static_cast<uint64_t>(seq), 8);
}
std::string NodeKey(std::string_view name) { return std::string(name); }
std::string RankKey(std::string_view c, int32_t attempt, int32_t rank) {
  std::string k = Numbered(c, static_cast<uint32_t>(attempt), 4);
  AppendBigEndian(k, static_cast<uint32_t>(rank), 4);
  return k;
}
std::string RankTimeSumsKey(std::string_view c, int32_t attempt) {
  std::string k = Prefix(c);
  k.push_back('r');
  AppendBigEndian(k, static_cast<uint32_t>(attempt), 4);
  return k;
}
std::string StepEvidenceKey(std::string_view c, int32_t attempt, int64_t step) {
  std::string k = Prefix(c);
  k.push_back('x');
  AppendBigEndian(k, static_cast<uint32_t>(attempt), 4);
  AppendBigEndian(k, static_cast<uint64_t>(step), 8);
  return k;
}

void Put(WriteBatch& b, const pb::Campaign& c) {
  b.Put(Table::kCampaigns, CampaignKey(c.id()), c.SerializeAsString());
}
void Put(WriteBatch& b, const pb::Attempt& a) {
  b.Put(Table::kAttempts, AttemptKey(a.campaign_id(), a.number()), a.SerializeAsString());
}
void Put(WriteBatch& b, const pb::Checkpoint& c) {
  b.Put(Table::kCheckpoints, CheckpointKey(c.campaign_id(), c.step()), c.SerializeAsString());
}
void Put(WriteBatch& b, std::string_view campaign, const pb::StepMetrics& m) {
  b.Put(Table::kMetrics, StepMetricsKey(campaign, m.step()), m.SerializeAsString());
}
void Put(WriteBatch& b, std::string_view campaign, const pb::EvalMetrics& m) {
  b.Put(Table::kMetrics, EvalMetricsKey(campaign, m.step(), m.dataset()), m.SerializeAsString());
}
void Put(WriteBatch& b, const pb::Event& e) {
  b.Put(Table::kEvents, EventKey(e.campaign_id(), e.seq()), e.SerializeAsString());
}
void Put(WriteBatch& b, const pb::Node& n) {
  b.Put(Table::kNodes, NodeKey(n.name()), n.SerializeAsString());
}
void Put(WriteBatch& b, const pb::RankRecord& r) {
  b.Put(Table::kRanks, RankKey(r.campaign_id(), r.attempt_number(), r.rank()),
        r.SerializeAsString());
}
void Put(WriteBatch& b, std::string_view c, const pb::RankTimeSums& sums) {
  b.Put(Table::kMetrics, RankTimeSumsKey(c, sums.attempt_number()), sums.SerializeAsString());
}
void PutStepEvidence(WriteBatch& b, std::string_view c, const pb::StepMetrics& m) {
  b.Put(Table::kMetrics, StepEvidenceKey(c, m.attempt_number(), m.step()), m.SerializeAsString());
}

absl::StatusOr<std::optional<pb::Campaign>> GetCampaign(const Store& s, std::string_view id) {
  return GetOne<pb::Campaign>(s, Table::kCampaigns, CampaignKey(id));
}
absl::StatusOr<std::vector<pb::Campaign>> ListCampaigns(const Store& s) {
  return ScanAll<pb::Campaign>(s, Table::kCampaigns, ScanOptions{});
}
absl::StatusOr<std::optional<pb::Attempt>> GetAttempt(const Store& s, std::string_view c,
                                                      int32_t n) {
  return GetOne<pb::Attempt>(s, Table::kAttempts, AttemptKey(c, n));
}
absl::StatusOr<std::vector<pb::Attempt>> ListAttempts(const Store& s, std::string_view c) {
  return ScanAll<pb::Attempt>(s, Table::kAttempts, PrefixScan(Prefix(c)));
}
absl::StatusOr<std::optional<pb::Checkpoint>> GetCheckpoint(const Store& s, std::string_view c,
                                                            int64_t step) {
  return GetOne<pb::Checkpoint>(s, Table::kCheckpoints, CheckpointKey(c, step));
}
absl::StatusOr<std::vector<pb::Checkpoint>> ListCheckpoints(const Store& s, std::string_view c) {
  return ScanAll<pb::Checkpoint>(s, Table::kCheckpoints, PrefixScan(Prefix(c)));
}
absl::StatusOr<std::vector<pb::Checkpoint>> ListCheckpointsBefore(const Store& s,
                                                                  std::string_view c,
                                                                  int64_t before_step,
                                                                  size_t limit) {
  ScanOptions o = PrefixScan(Prefix(c));
  if (before_step >= 0) o.end = CheckpointKey(c, before_step);
  o.limit = limit;
  o.reverse = true;
  return ScanAll<pb::Checkpoint>(s, Table::kCheckpoints, o);
}
absl::StatusOr<std::vector<pb::StepMetrics>> ListStepMetrics(const Store& s, std::string_view c,
                                                             int64_t first_step, int64_t end_step,
                                                             size_t limit, bool latest) {
  ScanOptions o;
  o.begin = StepMetricsKey(c, std::max<int64_t>(first_step, 0));
  std::string kind = Prefix(c);
  kind.push_back('s');
  o.end = end_step < 0 ? PrefixEnd(kind) : StepMetricsKey(c, end_step);
  o.limit = limit;
  o.reverse = latest;
  absl::StatusOr<std::vector<pb::StepMetrics>> out =
      ScanAll<pb::StepMetrics>(s, Table::kMetrics, o);
  if (out.ok() && latest) std::reverse(out->begin(), out->end());
  return out;
}
absl::StatusOr<std::vector<pb::EvalMetrics>> ListEvalMetrics(const Store& s, std::string_view c) {
  std::string kind = Prefix(c);
  kind.push_back('e');
  return ScanAll<pb::EvalMetrics>(s, Table::kMetrics, PrefixScan(kind));
}
absl::StatusOr<std::vector<pb::EvalMetrics>> ListLatestEvalMetrics(const Store& s,
                                                                   std::string_view c,
                                                                   size_t limit) {
  std::string kind = Prefix(c);
  kind.push_back('e');
  ScanOptions o = PrefixScan(kind);
  o.limit = limit;
  o.reverse = true;
  return ScanAll<pb::EvalMetrics>(s, Table::kMetrics, o);
}
absl::StatusOr<std::vector<pb::Event>> ListEvents(const Store& s, std::string_view c,
                                                  int64_t after_seq, size_t limit) {
  if (after_seq == std::numeric_limits<int64_t>::max())
    return std::vector<pb::Event>();  // none come after it
  ScanOptions o = PrefixScan(Prefix(c));
  if (after_seq >= 0) o.begin = EventKey(c, after_seq + 1);
  o.limit = limit;
  return ScanAll<pb::Event>(s, Table::kEvents, o);
}
absl::StatusOr<int64_t> LastEventSeq(const Store& s, std::string_view c) {
  ScanOptions o = PrefixScan(Prefix(c));
  o.limit = 1;
  o.reverse = true;
  absl::StatusOr<std::vector<pb::Event>> last = ScanAll<pb::Event>(s, Table::kEvents, o);
  if (!last.ok()) return last.status();
  return last->empty() ? int64_t{-1} : last->front().seq();
}
absl::StatusOr<std::optional<pb::Node>> GetNode(const Store& s, std::string_view name) {
  return GetOne<pb::Node>(s, Table::kNodes, NodeKey(name));
}
absl::StatusOr<std::vector<pb::Node>> ListNodes(const Store& s) {
  return ScanAll<pb::Node>(s, Table::kNodes, ScanOptions{});
}
absl::StatusOr<std::vector<pb::Node>> ListNodes(const Store& s, std::string_view after,
                                                size_t limit) {
  ScanOptions o;
  if (!after.empty()) {
    o.begin = std::string(after);
    o.begin.push_back('\0');  // the smallest key after `after`
  }
  o.limit = limit;
  return ScanAll<pb::Node>(s, Table::kNodes, o);
}
absl::StatusOr<std::optional<pb::RankRecord>> GetRankRecord(const Store& s, std::string_view c,
                                                            int32_t attempt, int32_t rank) {
  return GetOne<pb::RankRecord>(s, Table::kRanks, RankKey(c, attempt, rank));
}
absl::StatusOr<std::vector<pb::RankRecord>> ListRankRecords(const Store& s, std::string_view c,
                                                            int32_t attempt) {
  return ScanAll<pb::RankRecord>(s, Table::kRanks,
                                 PrefixScan(Numbered(c, static_cast<uint32_t>(attempt), 4)));
}
absl::StatusOr<std::optional<pb::RankTimeSums>> GetRankTimeSums(const Store& s, std::string_view c,
                                                                int32_t attempt) {
  return GetOne<pb::RankTimeSums>(s, Table::kMetrics, RankTimeSumsKey(c, attempt));
}
absl::StatusOr<std::vector<pb::StepMetrics>> ListStepEvidence(const Store& s, std::string_view c,
                                                              int32_t attempt) {
  std::string k = Prefix(c);
  k.push_back('x');
  AppendBigEndian(k, static_cast<uint32_t>(attempt), 4);
  return ScanAll<pb::StepMetrics>(s, Table::kMetrics, PrefixScan(std::move(k)));
}

}  // namespace belay::store

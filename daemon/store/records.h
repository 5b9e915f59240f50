// The typed records of the store: how campaigns, attempts, checkpoints, metrics, events and
// nodes are keyed and encoded (protobuf), and reads that decode them. Keys sort so that range
// scans return a campaign's records in order:
//   campaigns    <id>
//   attempts     <id> 0x00 <number, 4 bytes big-endian>
//   checkpoints  <id> 0x00 <step, 8 bytes big-endian>
//   metrics      <id> 0x00 's' <step, 8 bytes BE>            StepMetrics (per-rank summaries)
//                <id> 0x00 'e' <step, 8 bytes BE> <dataset>  EvalMetrics
//                <id> 0x00 'r' <attempt, 4 bytes BE>          RankTimeSums
//                <id> 0x00 'x' <attempt, 4 BE> <step, 8 BE>   StepMetrics with per-rank arrays:
//                                                             evidence of a failed attempt
//   events       <id> 0x00 <seq, 8 bytes big-endian>
//   nodes        <name>
//   ranks        <id> 0x00 <attempt, 4 bytes BE> <rank, 4 bytes BE>   RankRecord
// Campaign ids and node names never contain a NUL byte (callers check with ValidateId).
// Numbers are non-negative; big-endian makes byte order numeric order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "daemon/store/store.h"

namespace belay::store {

namespace pb = ::belay::v1;

// InvalidArgument for an empty id, one with a NUL byte or one longer than 256 bytes.
absl::Status ValidateId(std::string_view what, std::string_view id);

std::string CampaignKey(std::string_view id);
std::string AttemptKey(std::string_view campaign, int32_t number);
std::string CheckpointKey(std::string_view campaign, int64_t step);
std::string StepMetricsKey(std::string_view campaign, int64_t step);
std::string EvalMetricsKey(std::string_view campaign, int64_t step, std::string_view dataset);
std::string EventKey(std::string_view campaign, int64_t seq);
std::string NodeKey(std::string_view name);
std::string RankKey(std::string_view campaign, int32_t attempt, int32_t rank);
std::string RankTimeSumsKey(std::string_view campaign, int32_t attempt);
std::string StepEvidenceKey(std::string_view campaign, int32_t attempt, int64_t step);

// Puts into a batch, keyed by the record's own fields.
void Put(WriteBatch& batch, const pb::Campaign& campaign);
void Put(WriteBatch& batch, const pb::Attempt& attempt);
void Put(WriteBatch& batch, const pb::Checkpoint& checkpoint);
void Put(WriteBatch& batch, std::string_view campaign, const pb::StepMetrics& metrics);
void Put(WriteBatch& batch, std::string_view campaign, const pb::EvalMetrics& metrics);
void Put(WriteBatch& batch, const pb::Event& event);
void Put(WriteBatch& batch, const pb::Node& node);
void Put(WriteBatch& batch, const pb::RankRecord& rank);
void Put(WriteBatch& batch, std::string_view campaign, const pb::RankTimeSums& sums);
// A step report kept whole (with its per-rank arrays) as evidence of attempt `attempt`'s end.
void PutStepEvidence(WriteBatch& batch, std::string_view campaign, const pb::StepMetrics& metrics);

// Reads. A value that does not parse as its message is DataLoss naming the table and key
// (never a crash, never a default-constructed record).
absl::StatusOr<std::optional<pb::Campaign>> GetCampaign(const Store& store, std::string_view id);
absl::StatusOr<std::vector<pb::Campaign>> ListCampaigns(const Store& store);
absl::StatusOr<std::optional<pb::Attempt>> GetAttempt(const Store& store, std::string_view campaign,
                                                      int32_t number);
// A campaign's attempts in number order.
absl::StatusOr<std::vector<pb::Attempt>> ListAttempts(const Store& store,
                                                      std::string_view campaign);
absl::StatusOr<std::optional<pb::Checkpoint>> GetCheckpoint(const Store& store,
                                                            std::string_view campaign,
                                                            int64_t step);
// A campaign's checkpoints in step order.
absl::StatusOr<std::vector<pb::Checkpoint>> ListCheckpoints(const Store& store,
                                                            std::string_view campaign);
// At most `limit` of a campaign's checkpoints with step < before_step (< 0: all), newest first.
absl::StatusOr<std::vector<pb::Checkpoint>> ListCheckpointsBefore(const Store& store,
                                                                  std::string_view campaign,
                                                                  int64_t before_step,
                                                                  size_t limit);
// Step metrics with first_step <= step < end_step (end_step < 0: no bound), in step order, at
// most `limit` (0: all); `latest` takes the last `limit` of the range instead of the first.
absl::StatusOr<std::vector<pb::StepMetrics>> ListStepMetrics(const Store& store,
                                                             std::string_view campaign,
                                                             int64_t first_step, int64_t end_step,
                                                             size_t limit = 0, bool latest = false);
absl::StatusOr<std::vector<pb::EvalMetrics>> ListEvalMetrics(const Store& store,
                                                             std::string_view campaign);
// The campaign's last `limit` evaluation records (by step, then dataset), newest first.
absl::StatusOr<std::vector<pb::EvalMetrics>> ListLatestEvalMetrics(const Store& store,
                                                                   std::string_view campaign,
                                                                   size_t limit);
// Events with seq > after_seq, in order, at most `limit` (0: all).
absl::StatusOr<std::vector<pb::Event>> ListEvents(const Store& store, std::string_view campaign,
                                                  int64_t after_seq = -1, size_t limit = 0);
// The highest event seq of the campaign, or -1 when it has none.
absl::StatusOr<int64_t> LastEventSeq(const Store& store, std::string_view campaign);
absl::StatusOr<std::optional<pb::Node>> GetNode(const Store& store, std::string_view name);
absl::StatusOr<std::optional<pb::RankRecord>> GetRankRecord(const Store& store,
                                                            std::string_view campaign,
                                                            int32_t attempt, int32_t rank);
// An attempt's rank records in rank order (one scan; world size entries at most).
absl::StatusOr<std::vector<pb::RankRecord>> ListRankRecords(const Store& store,
                                                            std::string_view campaign,
                                                            int32_t attempt);
absl::StatusOr<std::optional<pb::RankTimeSums>> GetRankTimeSums(const Store& store,
                                                                std::string_view campaign,
                                                                int32_t attempt);
// The step reports kept as evidence of attempt `attempt`'s end, in step order.
absl::StatusOr<std::vector<pb::StepMetrics>> ListStepEvidence(const Store& store,
                                                              std::string_view campaign,
                                                              int32_t attempt);
absl::StatusOr<std::vector<pb::Node>> ListNodes(const Store& store);
// At most `limit` nodes whose names sort after `after` ("": from the first), by name.
absl::StatusOr<std::vector<pb::Node>> ListNodes(const Store& store, std::string_view after,
                                                size_t limit);

}  // namespace belay::store

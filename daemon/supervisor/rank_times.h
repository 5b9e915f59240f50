// What belayd keeps of a step report's per-rank time arrays: an O(1) summary (spread and the
// slowest ranks) in every stored step record, the arrays themselves only as evidence.
#pragma once

#include "belay/v1/types.pb.h"
#include "google/protobuf/repeated_field.h"

namespace belay::supervisor {

// The slowest ranks a summary names.
inline constexpr int kSummarySlowest = 8;

// Min, median, max and the kSummarySlowest slowest ranks of `times` (indexed by rank); an empty
// summary (ranks = 0) for an empty array.
::belay::v1::RankTimeSummary SummarizeRankTimes(
    const google::protobuf::RepeatedField<double>& times);

// The record belayd stores for step report `m`: `m` with its arrays replaced by their
// summaries, so its size does not grow with the world size.
::belay::v1::StepMetrics StoredStepRecord(const ::belay::v1::StepMetrics& m);

}  // namespace belay::supervisor

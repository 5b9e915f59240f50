// The ranks of an attempt as the store keeps them: one RankRecord per rank (the node it
// registered from, how it left), and what a belayd of an older version kept in the attempt
// record instead.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "daemon/store/store.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// Rank `rank`'s record of attempt `attempt` of campaign `id`, or a new one.
absl::StatusOr<pb::RankRecord> RankRecordOf(const store::Store& st, const std::string& id,
                                            int32_t attempt, int32_t rank);

// The rank records of attempt `a`, in rank order (with what an older belayd kept in the
// attempt record).
absl::StatusOr<std::vector<pb::RankRecord>> RanksOf(const store::Store& st, const pb::Attempt& a);

// Rank `exit.rank()` of attempt `attempt` of campaign `id` says how it leaves: kept in its
// record (synced). Ignored (OK) for an attempt that is unknown or ended, or a rank outside it.
absl::Status RecordRankExit(store::Store& st, const std::string& id, int32_t attempt,
                            pb::RankExit exit);
// Rank `rank` registered from `node`: kept in its record (buffered). Ignored likewise, and for
// a name that is empty or longer than 256 bytes.
absl::Status RecordRankNode(store::Store& st, const std::string& id, int32_t attempt, int32_t rank,
                            const std::string& node);

}  // namespace belay::supervisor

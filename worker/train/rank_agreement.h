// What the ranks of a data-parallel group agree on: one status for all, sums added in rank
// order, and the rule that a failed collective ends the process.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "worker/comm/communicator.h"

namespace belay::train {

// A failed collective leaves the ranks in states that can no longer be matched up: logs
// `what` failed and aborts the process (the launcher or belayd sees the exit and restarts
// from the last checkpoint). Returns when `s` is OK.
void CheckCollective(const absl::Status& s, std::string_view what);

// Every rank's status, agreed: OK when all are OK, else the first failing rank's error
// prefixed with its rank (when there are several ranks). Collective.
absl::Status AgreeOnStatus(comm::Communicator& comm, const absl::Status& local);

// Sums one double per rank in rank order: the same bits on every rank. Collective.
double SumOverRanks(comm::Communicator& comm, double local);

}  // namespace belay::train

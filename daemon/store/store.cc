// Table names and helpers shared by the Store implementations.
#include "daemon/store/store.h"

#include "common/strings.h"

namespace belay::store {

std::string_view TableName(Table table) {
  switch (table) {
    case Table::kMeta:
      return "meta";
    case Table::kCampaigns:
      return "campaigns";
    case Table::kAttempts:
      return "attempts";
    case Table::kCheckpoints:
      return "checkpoints";
    case Table::kMetrics:
      return "metrics";
    case Table::kNodes:
      return "nodes";
    case Table::kEvents:
      return "events";
    case Table::kRanks:
      return "ranks";
  }
  return "unknown";
}

absl::Status ReadOnlyError(const absl::Status& first) {
  return absl::FailedPreconditionError(
      Cat("store is read-only after a write error: ", first.message()));
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last != 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

}  // namespace belay::store

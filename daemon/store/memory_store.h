// A Store in memory, for the supervisor's tests: the same contract as RocksDbStore, plus fault
// injection (the next write fails) and nothing durable.
#pragma once

#include <array>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "daemon/store/store.h"

namespace belay::store {

class MemoryStore final : public Store {
 public:
  absl::Status Write(const WriteBatch& batch, Durability durability) override;
  absl::StatusOr<std::optional<std::string>> Get(Table table, std::string_view key) const override;
  absl::StatusOr<Entries> Scan(Table table, const ScanOptions& options) const override;
  absl::Status write_error() const override;

  // The next Write fails with `error` (which then makes the store read-only, as a real
  // failure would) and applies nothing.
  void FailNextWrite(absl::Status error);
  // Writes made so far, by durability (for tests that check what was synced).
  int synced_writes() const;
  int buffered_writes() const;

 private:
  mutable Mutex mu_;
  std::array<std::map<std::string, std::string, std::less<>>, std::size(kAllTables)> tables_
      ABSL_GUARDED_BY(mu_);
  absl::Status inject_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  int synced_ ABSL_GUARDED_BY(mu_) = 0;
  int buffered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace belay::store

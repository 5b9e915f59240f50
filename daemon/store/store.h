// belayd's state store: ordered key-value tables (RocksDB column families in production, a
// map in tests) written in atomic batches. Typed records (campaigns, attempts, ...) sit on top
// in records.h; the supervisor and the RPC layer see only those.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace belay::store {

// The tables of the store. The numeric values are not stored anywhere; the names are (they are
// RocksDB column family names): never rename one.
enum class Table {
  kMeta,         // "meta": schema version and other store-wide facts
  kCampaigns,    // "campaigns": Campaign by id
  kAttempts,     // "attempts": Attempt by (campaign, number)
  kCheckpoints,  // "checkpoints": Checkpoint by (campaign, step)
  kMetrics,      // "metrics": StepMetrics and EvalMetrics by (campaign, kind, step)
  kNodes,        // "nodes": Node by name
  kEvents,       // "events": Event by (campaign, seq): the campaign's audit log
  kRanks,        // "ranks": RankRecord by (campaign, attempt, rank)
};
inline constexpr Table kAllTables[] = {Table::kMeta,        Table::kCampaigns, Table::kAttempts,
                                       Table::kCheckpoints, Table::kMetrics,   Table::kNodes,
                                       Table::kEvents,      Table::kRanks};
std::string_view TableName(Table table);

// The schema version this build writes and reads. A store written by a newer schema is
// refused at open; older ones are read as they are. 2: the "ranks" table (rank nodes and
// exits out of the attempt record), step records with per-rank summaries instead of arrays.
inline constexpr int kSchemaVersion = 2;

// Puts and deletes applied together: all of them or none.
class WriteBatch {
 public:
  struct Op {
    Table table;
    std::string key;
    std::optional<std::string> value;  // nullopt: delete the key
  };

  void Put(Table table, std::string key, std::string value) {
    ops_.push_back({table, std::move(key), std::move(value)});
  }
  void Delete(Table table, std::string key) {
    ops_.push_back({table, std::move(key), std::nullopt});
  }
  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;  // applied in order: a later op on the same key wins
};

enum class Durability {
  kSynced,    // on stable storage when Write returns OK (state transitions)
  kBuffered,  // may be lost in a machine crash, never half-applied (metrics)
};

struct ScanOptions {
  std::string begin;     // first key, inclusive
  std::string end;       // last key, exclusive; empty: to the end of the table
  size_t limit = 0;      // at most this many entries; 0: no limit
  bool reverse = false;  // descending from the last key below `end`
};

using Entries = std::vector<std::pair<std::string, std::string>>;

// Keys compare as unsigned bytes (memcmp order) in every implementation.
//
// Failure: the first write that fails makes the store read-only — that write and every later
// one return FailedPrecondition "store is read-only after a write error: <first error>", and
// write_error() returns it. (Carrying on after a lost write would break "every transition is
// written before it is acted on".) Reads go on working. Reopening the store is the way back.
//
// Thread-safety: all methods may be called from several threads at once; each Write is
// atomic with respect to every read.
class Store {
 public:
  virtual ~Store() = default;

  virtual absl::Status Write(const WriteBatch& batch, Durability durability) = 0;
  // The value of `key`, or nullopt when there is none.
  virtual absl::StatusOr<std::optional<std::string>> Get(Table table,
                                                         std::string_view key) const = 0;
  virtual absl::StatusOr<Entries> Scan(Table table, const ScanOptions& options) const = 0;

  // OK while writes are accepted; the sticky error once one failed.
  virtual absl::Status write_error() const = 0;
};

// The error every write returns once `first` has made the store read-only.
absl::Status ReadOnlyError(const absl::Status& first);

// The smallest key greater than every key starting with `prefix` (for ScanOptions::end), or ""
// when there is none (a prefix of 0xff bytes only).
std::string PrefixEnd(std::string_view prefix);

}  // namespace belay::store

// The production Store: RocksDB in a state directory, one column family per Table, synced WAL
// for state transitions, a schema version checked at open.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "daemon/store/store.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Env;
}  // namespace rocksdb

namespace belay::store {

struct RocksDbStoreOptions {
  // Where RocksDB's I/O goes; null: the default (the local file system). Tests pass an Env
  // that injects write failures.
  rocksdb::Env* env = nullptr;
};

class RocksDbStore final : public Store {
 public:
  // Opens the store in `dir`, creating it (and the column families) if missing. Errors:
  // FailedPrecondition when the store was written by a newer schema ("… schema 3; this belayd
  // reads up to 1: upgrade belayd"), or holds a schema version that does not parse; the
  // RocksDB error (as Unavailable when another process holds the lock, Internal otherwise)
  // naming the directory.
  static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(
      const std::filesystem::path& dir, const RocksDbStoreOptions& options = {});
  ~RocksDbStore() override;

  absl::Status Write(const WriteBatch& batch, Durability durability) override;
  absl::StatusOr<std::optional<std::string>> Get(Table table, std::string_view key) const override;
  absl::StatusOr<Entries> Scan(Table table, const ScanOptions& options) const override;
  absl::Status write_error() const override;

 private:
  RocksDbStore(std::filesystem::path dir, std::unique_ptr<rocksdb::DB> db,
               std::vector<rocksdb::ColumnFamilyHandle*> handles);
  rocksdb::ColumnFamilyHandle* handle(Table table) const;

  std::filesystem::path dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // by Table; owned, closed in the destructor
  mutable Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);  // the first failed write
};

}  // namespace belay::store

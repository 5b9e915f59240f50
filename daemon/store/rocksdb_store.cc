// RocksDbStore: column families, synced batches, sticky write errors, schema version.
#include "daemon/store/rocksdb_store.h"

#include <charconv>

#include "common/strings.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/options_util.h"
#include "rocksdb/write_batch.h"

namespace belay::store {
namespace {

constexpr std::string_view kSchemaKey = "schema_version";

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = Cat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) return absl::UnavailableError(msg);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
    return absl::UnavailableError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  return absl::InternalError(msg);
}

rocksdb::Slice ToSlice(std::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

}  // namespace

absl::StatusOr<std::unique_ptr<RocksDbStore>> RocksDbStore::Open(const std::filesystem::path& dir,
                                                                 const RocksDbStoreOptions& o) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // A state directory is small: one background job, few open files.
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 5;
  if (o.env != nullptr) db_options.env = o.env;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (Table t : kAllTables) {
    rocksdb::ColumnFamilyOptions cf;
    cf.OptimizeForSmallDb();
    // The default family is RocksDB's own; every Table has a named one.
    families.emplace_back(std::string(TableName(t)), cf);
  }
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(
        Cat(dir.string(), ": cannot create the state directory: ", ec.message()));
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir.string(), families, &handles, &raw);
  if (!s.ok()) return FromRocks(s, Cat("cannot open the store in ", dir.string()));
  std::unique_ptr<rocksdb::DB> db(raw);
  // The default family's handle is not kept.
  db->DestroyColumnFamilyHandle(handles.back());
  handles.pop_back();
  std::unique_ptr<RocksDbStore> store(new RocksDbStore(dir, std::move(db), std::move(handles)));

  absl::StatusOr<std::optional<std::string>> version = store->Get(Table::kMeta, kSchemaKey);
  if (!version.ok()) return version.status();
  if (!version->has_value()) {
    WriteBatch b;
    b.Put(Table::kMeta, std::string(kSchemaKey), std::to_string(kSchemaVersion));
    if (absl::Status w = store->Write(b, Durability::kSynced); !w.ok()) return w;
    return store;
  }
  int v = 0;
  const std::string& text = **version;
  auto [end, perr] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (perr != std::errc() || end != text.data() + text.size() || v < 1) {
    return absl::FailedPreconditionError(
        Cat(dir.string(), ": schema version \"", text, "\" is not a version this belayd knows"));
  }
  if (v > kSchemaVersion) {
    return absl::FailedPreconditionError(Cat(
        dir.string(), ": written by a newer belayd (store schema ", v, "; this belayd reads up to ",
        kSchemaVersion, "): upgrade belayd, or use another --state-dir"));
  }
  if (v < kSchemaVersion) {
    // Older records stay readable as they are; from now on this store holds records of this
    // schema, which an older belayd must not take for its own.
    WriteBatch b;
    b.Put(Table::kMeta, std::string(kSchemaKey), std::to_string(kSchemaVersion));
    if (absl::Status w = store->Write(b, Durability::kSynced); !w.ok()) return w;
  }
  return store;
}

RocksDbStore::RocksDbStore(std::filesystem::path dir, std::unique_ptr<rocksdb::DB> db,
                           std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : dir_(std::move(dir)), db_(std::move(db)), handles_(std::move(handles)) {}

RocksDbStore::~RocksDbStore() {
  for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close().PermitUncheckedError();
}

rocksdb::ColumnFamilyHandle* RocksDbStore::handle(Table table) const {
  return handles_[static_cast<size_t>(table)];
}

absl::Status RocksDbStore::Write(const WriteBatch& batch, Durability durability) {
  MutexLock lock(&mu_);
  if (!error_.ok()) return ReadOnlyError(error_);
  rocksdb::WriteBatch wb;
  for (const WriteBatch::Op& op : batch.ops()) {
    rocksdb::Status s = op.value ? wb.Put(handle(op.table), op.key, *op.value)
                                 : wb.Delete(handle(op.table), op.key);
    if (!s.ok()) return FromRocks(s, "cannot build the write batch");  // nothing written yet
  }
  rocksdb::WriteOptions wo;
  wo.sync = durability == Durability::kSynced;
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) {
    error_ = FromRocks(s, Cat("write to ", dir_.string()));
    return ReadOnlyError(error_);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RocksDbStore::Get(Table table,
                                                             std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handle(table), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, Cat("read ", TableName(table)));
  return std::optional<std::string>(std::move(value));
}

absl::StatusOr<Entries> RocksDbStore::Scan(Table table, const ScanOptions& o) const {
  Entries out;
  if (!o.end.empty() && o.end <= o.begin) return out;
  rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handle(table)));
  auto full = [&] { return o.limit != 0 && out.size() >= o.limit; };
  if (o.reverse) {
    if (o.end.empty()) {
      it->SeekToLast();
    } else {
      it->SeekForPrev(ToSlice(o.end));
      if (it->Valid() && it->key() == ToSlice(o.end)) it->Prev();  // end is exclusive
    }
    for (; it->Valid() && !full() && it->key().compare(ToSlice(o.begin)) >= 0; it->Prev()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
  } else {
    for (it->Seek(ToSlice(o.begin));
         it->Valid() && !full() && (o.end.empty() || it->key().compare(ToSlice(o.end)) < 0);
         it->Next()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), Cat("scan ", TableName(table)));
  return out;
}

absl::Status RocksDbStore::write_error() const {
  MutexLock lock(&mu_);
  return error_;
}

}  // namespace belay::store

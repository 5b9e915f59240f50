// MemoryStore: ordered maps under one mutex.
#include "daemon/store/memory_store.h"

namespace belay::store {

absl::Status MemoryStore::Write(const WriteBatch& batch, Durability durability) {
  MutexLock lock(&mu_);
  if (!error_.ok()) return ReadOnlyError(error_);
  if (!inject_.ok()) {
    error_ = inject_;
    inject_ = absl::OkStatus();
    return ReadOnlyError(error_);
  }
  for (const WriteBatch::Op& op : batch.ops()) {
    auto& t = tables_[static_cast<size_t>(op.table)];
    if (op.value) {
      t[op.key] = *op.value;
    } else {
      t.erase(op.key);
    }
  }
  (durability == Durability::kSynced ? synced_ : buffered_)++;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> MemoryStore::Get(Table table,
                                                            std::string_view key) const {
  MutexLock lock(&mu_);
  const auto& t = tables_[static_cast<size_t>(table)];
  auto it = t.find(key);
  if (it == t.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

absl::StatusOr<Entries> MemoryStore::Scan(Table table, const ScanOptions& o) const {
  MutexLock lock(&mu_);
  const auto& t = tables_[static_cast<size_t>(table)];
  if (!o.end.empty() && o.end <= o.begin) return Entries{};
  auto lo = t.lower_bound(o.begin);
  auto hi = o.end.empty() ? t.end() : t.lower_bound(o.end);
  Entries out;
  auto full = [&] { return o.limit != 0 && out.size() >= o.limit; };
  if (o.reverse) {
    for (auto it = hi; it != lo && !full();) {
      --it;
      out.emplace_back(it->first, it->second);
    }
  } else {
    for (auto it = lo; it != hi && !full(); ++it) out.emplace_back(it->first, it->second);
  }
  return out;
}

absl::Status MemoryStore::write_error() const {
  MutexLock lock(&mu_);
  return error_;
}

void MemoryStore::FailNextWrite(absl::Status error) {
  MutexLock lock(&mu_);
  inject_ = std::move(error);
}

int MemoryStore::synced_writes() const {
  MutexLock lock(&mu_);
  return synced_;
}

int MemoryStore::buffered_writes() const {
  MutexLock lock(&mu_);
  return buffered_;
}

}  // namespace belay::store

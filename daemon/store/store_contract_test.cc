// One contract for every Store implementation (MemoryStore, RocksDbStore): ordering, ranges,
// batches, typed records, corrupt values, sticky write errors, and — where the store is
// durable — what survives a reopen.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "daemon/store/rocksdb_store.h"
#include "rocksdb/env.h"

namespace belay::store {
namespace {

namespace fs = std::filesystem;

// A RocksDB Env whose files fail every write while `fail` is set: a full or broken disk.
class FailingEnv : public rocksdb::EnvWrapper {
 public:
  FailingEnv() : rocksdb::EnvWrapper(rocksdb::Env::Default()) {}
  const char* Name() const override { return "FailingEnv"; }
  std::atomic<bool> fail{false};

  rocksdb::Status NewWritableFile(const std::string& name,
                                  std::unique_ptr<rocksdb::WritableFile>* out,
                                  const rocksdb::EnvOptions& options) override {
    std::unique_ptr<rocksdb::WritableFile> file;
    rocksdb::Status s = target()->NewWritableFile(name, &file, options);
    if (s.ok()) *out = std::make_unique<File>(std::move(file), this);
    return s;
  }

 private:
  class File : public rocksdb::WritableFileWrapper {
   public:
    File(std::unique_ptr<rocksdb::WritableFile> f, FailingEnv* env)
        : rocksdb::WritableFileWrapper(f.get()), owned_(std::move(f)), env_(env) {}
    rocksdb::Status Append(const rocksdb::Slice& data) override {
      if (env_->fail) return rocksdb::Status::IOError("injected", "No space left on device");
      return rocksdb::WritableFileWrapper::Append(data);
    }
    rocksdb::Status Append(const rocksdb::Slice& data,
                           const rocksdb::DataVerificationInfo& v) override {
      if (env_->fail) return rocksdb::Status::IOError("injected", "No space left on device");
      return rocksdb::WritableFileWrapper::Append(data, v);
    }
    rocksdb::Status Sync() override {
      if (env_->fail) return rocksdb::Status::IOError("injected", "No space left on device");
      return rocksdb::WritableFileWrapper::Sync();
    }
    rocksdb::Status Fsync() override {
      if (env_->fail) return rocksdb::Status::IOError("injected", "No space left on device");
      return rocksdb::WritableFileWrapper::Fsync();
    }

   private:
    std::unique_ptr<rocksdb::WritableFile> owned_;
    FailingEnv* env_;
  };
};

// What the contract needs from an implementation.
struct Backend {
  virtual ~Backend() = default;
  virtual Store& store() = 0;
  // Makes the next write fail as the medium would.
  virtual void BreakWrites() = 0;
  // Closes and reopens; false when the store is not durable (then the test is skipped).
  virtual bool Reopen() = 0;
};

struct MemoryBackend : Backend {
  MemoryStore s;
  Store& store() override { return s; }
  void BreakWrites() override {
    s.FailNextWrite(absl::InternalError("injected: No space left on device"));
  }
  bool Reopen() override { return false; }
};

struct RocksBackend : Backend {
  fs::path dir;
  FailingEnv env;
  std::unique_ptr<RocksDbStore> s;
  RocksBackend() {
    dir = fs::temp_directory_path() /
          ("belay_store_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir);
    Open();
  }
  ~RocksBackend() override {
    s.reset();
    fs::remove_all(dir);
  }
  void Open() {
    RocksDbStoreOptions o;
    o.env = &env;
    absl::StatusOr<std::unique_ptr<RocksDbStore>> opened = RocksDbStore::Open(dir, o);
    EXPECT_TRUE(opened.ok()) << opened.status();
    s = std::move(*opened);
  }
  Store& store() override { return *s; }
  void BreakWrites() override { env.fail = true; }
  bool Reopen() override {
    s.reset();
    env.fail = false;
    Open();
    return true;
  }
  static inline int counter = 0;
};

class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "Memory") {
      backend_ = std::make_unique<MemoryBackend>();
    } else {
      backend_ = std::make_unique<RocksBackend>();
    }
  }
  Store& store() { return backend_->store(); }
  void MustWrite(const WriteBatch& b, Durability d = Durability::kSynced) {
    absl::Status s = store().Write(b, d);
    ASSERT_TRUE(s.ok()) << s;
  }
  std::unique_ptr<Backend> backend_;
};

std::vector<std::string> Keys(const Entries& e) {
  std::vector<std::string> k;
  for (const auto& [key, value] : e) k.push_back(key);
  return k;
}

TEST_P(StoreContract, EmptyTablesReadNothing) {
  for (Table t : kAllTables) {
    if (t == Table::kMeta) continue;  // a durable store keeps its schema version there
    absl::StatusOr<Entries> e = store().Scan(t, {});
    ASSERT_TRUE(e.ok());
    EXPECT_TRUE(e->empty()) << TableName(t);
  }
  absl::StatusOr<std::optional<std::string>> v = store().Get(Table::kCampaigns, "x");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
}

TEST_P(StoreContract, BatchAppliesEveryOpInOrderAndTablesAreSeparate) {
  WriteBatch b;
  b.Put(Table::kCampaigns, "a", "1");
  b.Put(Table::kCampaigns, "b", "2");
  b.Put(Table::kCampaigns, "a", "3");  // later op wins
  b.Put(Table::kNodes, "a", "node");
  b.Delete(Table::kCampaigns, "b");
  b.Delete(Table::kCampaigns, "never-there");
  MustWrite(b);
  EXPECT_EQ(*store().Get(Table::kCampaigns, "a").value(), "3");
  EXPECT_FALSE(store().Get(Table::kCampaigns, "b").value().has_value());
  EXPECT_EQ(*store().Get(Table::kNodes, "a").value(), "node");
  EXPECT_FALSE(store().Get(Table::kEvents, "a").value().has_value());
}

TEST_P(StoreContract, KeysSortAsUnsignedBytesWithRangesLimitsAndReverse) {
  WriteBatch b;
  for (std::string k :
       {std::string("b"), std::string("a"), std::string("\x7f"), std::string("\x80"),
        std::string("a\0b", 3), std::string("ab"), std::string("\xff\xff")}) {
    b.Put(Table::kEvents, k, "v");
  }
  MustWrite(b);
  const std::vector<std::string> all = {
      std::string("a"), std::string("a\0b", 3), "ab", "b", "\x7f", "\x80", "\xff\xff"};
  EXPECT_EQ(Keys(*store().Scan(Table::kEvents, {})), all);
  EXPECT_EQ(Keys(*store().Scan(Table::kEvents, {.begin = "ab", .end = "\x80"})),
            (std::vector<std::string>{"ab", "b", "\x7f"}));
  EXPECT_EQ(Keys(*store().Scan(Table::kEvents, {.begin = "a", .end = "", .limit = 2})),
            (std::vector<std::string>{"a", std::string("a\0b", 3)}));
  EXPECT_EQ(
      Keys(*store().Scan(Table::kEvents, {.begin = "", .end = "b", .limit = 2, .reverse = true})),
      (std::vector<std::string>{"ab", std::string("a\0b", 3)}));
  EXPECT_EQ(Keys(*store().Scan(Table::kEvents,
                               {.begin = "\x7f", .end = "", .limit = 0, .reverse = true})),
            (std::vector<std::string>{"\xff\xff", "\x80", "\x7f"}));
  EXPECT_TRUE(store().Scan(Table::kEvents, {.begin = "b", .end = "a"})->empty());
  EXPECT_EQ(PrefixEnd("a"), "b");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixEnd("\xff"), "");
}

pb::Attempt MakeAttempt(const std::string& c, int n) {
  pb::Attempt a;
  a.set_campaign_id(c);
  a.set_number(n);
  a.set_state(pb::ATTEMPT_STATE_RUNNING);
  return a;
}

TEST_P(StoreContract, RecordsComeBackInNumericOrderPerCampaign) {
  WriteBatch b;
  for (int n : {10, 2, 256, 1}) Put(b, MakeAttempt("a", n));
  Put(b, MakeAttempt("ab", 5));  // a campaign whose id extends another's
  for (int64_t step : {int64_t{1000}, int64_t{50}, int64_t{1} << 40}) {
    pb::Checkpoint c;
    c.set_campaign_id("a");
    c.set_step(step);
    Put(b, c);
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(1.0 / static_cast<double>(step));
    Put(b, "a", m);
  }
  pb::EvalMetrics ev;
  ev.set_step(50);
  ev.set_dataset("val");
  Put(b, "a", ev);
  for (int64_t seq = 0; seq < 5; ++seq) {
    pb::Event e;
    e.set_campaign_id("a");
    e.set_seq(seq);
    e.set_message("event " + std::to_string(seq));
    Put(b, e);
  }
  MustWrite(b);

  std::vector<int> numbers;
  const std::vector<pb::Attempt> attempts = ListAttempts(store(), "a").value();
  for (const pb::Attempt& a : attempts) numbers.push_back(a.number());
  EXPECT_EQ(numbers, (std::vector<int>{1, 2, 10, 256}));
  EXPECT_EQ(ListAttempts(store(), "ab").value().size(), 1u);
  EXPECT_EQ(GetAttempt(store(), "a", 10).value()->number(), 10);
  EXPECT_FALSE(GetAttempt(store(), "a", 3).value().has_value());

  std::vector<int64_t> steps;
  const std::vector<pb::Checkpoint> checkpoints = ListCheckpoints(store(), "a").value();
  for (const pb::Checkpoint& c : checkpoints) steps.push_back(c.step());
  EXPECT_EQ(steps, (std::vector<int64_t>{50, 1000, int64_t{1} << 40}));
  EXPECT_TRUE(ListCheckpoints(store(), "ab").value().empty());

  auto metric_steps = [&](int64_t first, int64_t end, size_t limit, bool latest) {
    std::vector<int64_t> out;
    const std::vector<pb::StepMetrics> metrics =
        ListStepMetrics(store(), "a", first, end, limit, latest).value();
    for (const pb::StepMetrics& m : metrics) out.push_back(m.step());
    return out;
  };
  EXPECT_EQ(metric_steps(0, -1, 0, false), (std::vector<int64_t>{50, 1000, int64_t{1} << 40}));
  EXPECT_EQ(metric_steps(51, 2000, 0, false), (std::vector<int64_t>{1000}));
  EXPECT_EQ(metric_steps(0, -1, 2, true), (std::vector<int64_t>{1000, int64_t{1} << 40}));
  ASSERT_EQ(ListEvalMetrics(store(), "a").value().size(), 1u);  // not mixed with step metrics
  EXPECT_EQ(ListEvalMetrics(store(), "a").value()[0].dataset(), "val");

  std::vector<int64_t> seqs;
  const std::vector<pb::Event> events = ListEvents(store(), "a", 1, 2).value();
  for (const pb::Event& e : events) seqs.push_back(e.seq());
  EXPECT_EQ(seqs, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(LastEventSeq(store(), "a").value(), 4);
  EXPECT_EQ(LastEventSeq(store(), "ab").value(), -1);
}

TEST_P(StoreContract, CampaignsAndNodesRoundTrip) {
  pb::Campaign c;
  c.set_id("c-1");
  c.set_name("gpt2");
  c.set_owner_uid(1000);
  c.set_state(pb::CAMPAIGN_STATE_RUNNING);
  c.set_last_checkpoint_step(1200);
  pb::Node n;
  n.set_name("nid001234");
  n.set_excluded(true);
  WriteBatch b;
  Put(b, c);
  Put(b, n);
  MustWrite(b);
  absl::StatusOr<std::optional<pb::Campaign>> got = GetCampaign(store(), "c-1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->SerializeAsString(), c.SerializeAsString());
  EXPECT_EQ(ListCampaigns(store()).value().size(), 1u);
  EXPECT_TRUE(GetNode(store(), "nid001234").value()->excluded());
  EXPECT_EQ(ListNodes(store()).value().size(), 1u);
  EXPECT_TRUE(ValidateId("campaign id", "c-1").ok());
  EXPECT_FALSE(ValidateId("campaign id", std::string("a\0b", 3)).ok());
  EXPECT_FALSE(ValidateId("campaign id", "").ok());
}

TEST_P(StoreContract, AValueThatDoesNotParseIsDataLossNamingTheKey) {
  WriteBatch b;
  b.Put(Table::kCampaigns, "c-9", std::string("\xff\xff\xff\xff", 4));
  MustWrite(b);
  absl::StatusOr<std::optional<pb::Campaign>> got = GetCampaign(store(), "c-9");
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(absl::IsDataLoss(got.status())) << got.status();
  EXPECT_NE(got.status().message().find("campaigns"), std::string_view::npos) << got.status();
  EXPECT_NE(got.status().message().find("c-9"), std::string_view::npos) << got.status();
  EXPECT_FALSE(ListCampaigns(store()).ok());
}

TEST_P(StoreContract, AFailedWriteMakesTheStoreReadOnlyAndReadsGoOn) {
  WriteBatch first;
  first.Put(Table::kCampaigns, "kept", "1");
  MustWrite(first);
  backend_->BreakWrites();
  WriteBatch b;
  b.Put(Table::kCampaigns, "lost", "2");
  absl::Status s = store().Write(b, Durability::kSynced);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("read-only after a write error"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("No space left on device"), std::string_view::npos) << s;
  EXPECT_FALSE(store().write_error().ok());
  // Every later write fails the same way, buffered ones too, even once the medium is back.
  WriteBatch later;
  later.Put(Table::kMetrics, "m", "3");
  EXPECT_TRUE(absl::IsFailedPrecondition(store().Write(later, Durability::kBuffered)));
  EXPECT_EQ(*store().Get(Table::kCampaigns, "kept").value(), "1");
  EXPECT_FALSE(store().Get(Table::kCampaigns, "lost").value().has_value());
}

TEST_P(StoreContract, SyncedAndBufferedWritesSurviveAReopen) {
  WriteBatch b;
  b.Put(Table::kCampaigns, "c", "state");
  MustWrite(b, Durability::kSynced);
  WriteBatch m;
  m.Put(Table::kMetrics, "c", "metric");
  MustWrite(m, Durability::kBuffered);
  if (!backend_->Reopen()) GTEST_SKIP() << GetParam() << " is not durable";
  EXPECT_EQ(*store().Get(Table::kCampaigns, "c").value(), "state");
  EXPECT_EQ(*store().Get(Table::kMetrics, "c").value(), "metric");
  EXPECT_TRUE(store().write_error().ok());
}

INSTANTIATE_TEST_SUITE_P(, StoreContract, ::testing::Values("Memory", "RocksDb"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// RocksDbStore specifics: the schema version.
TEST(RocksDbStore, RefusesAStoreWrittenByANewerSchema) {
  fs::path dir = fs::temp_directory_path() / ("belay_store_schema_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(dir);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(*(*s)->Get(Table::kMeta, "schema_version").value(), std::to_string(kSchemaVersion));
    WriteBatch b;
    b.Put(Table::kMeta, "schema_version", std::to_string(kSchemaVersion + 1));
    ASSERT_TRUE((*s)->Write(b, Durability::kSynced).ok());
  }
  absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s.status())) << s.status();
  EXPECT_NE(s.status().message().find("newer belayd"), std::string_view::npos) << s.status();
  EXPECT_NE(s.status().message().find(dir.string()), std::string_view::npos) << s.status();
  {
    // Garbage where the version should be.
    fs::remove_all(dir);
    absl::StatusOr<std::unique_ptr<RocksDbStore>> fresh = RocksDbStore::Open(dir);
    ASSERT_TRUE(fresh.ok());
    WriteBatch b;
    b.Put(Table::kMeta, "schema_version", "one");
    ASSERT_TRUE((*fresh)->Write(b, Durability::kSynced).ok());
  }
  s = RocksDbStore::Open(dir);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("\"one\""), std::string_view::npos) << s.status();
  fs::remove_all(dir);
}

TEST(RocksDbStore, ASecondOpenOfTheSameDirectoryIsRefused) {
  fs::path dir = fs::temp_directory_path() / ("belay_store_lock_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  absl::StatusOr<std::unique_ptr<RocksDbStore>> a = RocksDbStore::Open(dir);
  ASSERT_TRUE(a.ok());
  absl::StatusOr<std::unique_ptr<RocksDbStore>> b = RocksDbStore::Open(dir);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(absl::IsUnavailable(b.status())) << b.status();
  a->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace belay::store

// DataLoader: sequence numbering, shuffling, fingerprints, LoaderState, and the contract that
// the global batch does not depend on the number of ranks.
#include "worker/data/loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/data/shuffle.h"

namespace belay::data {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 1 << 20;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Token j of shard `id` is id·10000 + j, so every token says where it came from.
std::vector<int32_t> ShardTokens(int id, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) t[static_cast<size_t>(j)] = id * 10000 + j;
  return t;
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_loader_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Shard(const std::string& name, int id, int n) {
    ASSERT_TRUE(WriteTokenShard(dir_ / name, ShardTokens(id, n), kShardVersionU32).ok());
  }

  // Three shards with 5, 3 and 4 sequences of T = 4.
  void ThreeShards() {
    Shard("s_0.bin", 1, 21);  // (21 - 1) / 4 = 5
    Shard("s_1.bin", 2, 15);  // 14 / 4 = 3, two tokens unused
    Shard("s_2.bin", 3, 17);  // 4
  }

  std::unique_ptr<DataLoader> Open(bool shuffle, uint64_t seed = 7, int64_t t = 4,
                                   std::vector<std::string> globs = {}) {
    if (globs.empty()) globs = {(dir_ / "s_*.bin").string()};
    absl::StatusOr<std::unique_ptr<DataLoader>> loader = DataLoader::Open(
        {.globs = globs, .seq_len = t, .vocab_size = kVocab, .seed = seed, .shuffle = shuffle});
    EXPECT_TRUE(loader.ok()) << loader.status();
    return loader.ok() ? *std::move(loader) : nullptr;
  }

  fs::path dir_;
};

std::vector<int32_t> Seq(const DataLoader& loader, uint64_t g) {
  std::vector<int32_t> out(static_cast<size_t>(loader.seq_len() + 1), -1);
  loader.Sequence(g, out.data());
  return out;
}

// The T + 1 tokens sequence k of shard `id` must hold.
std::vector<int32_t> Expected(int id, int64_t k, int64_t t) {
  std::vector<int32_t> out;
  for (int64_t j = 0; j <= t; ++j) out.push_back(static_cast<int32_t>(id * 10000 + k * t + j));
  return out;
}

TEST(Shuffle, PermutationIsPinned) {
  // Pinned so a change to the generator, the bounded draw or Fisher–Yates (any of which would
  // reorder every resumed run's data) is caught.
  EXPECT_EQ(RandomPermutation(10, 42), (std::vector<uint32_t>{0, 9, 5, 8, 6, 4, 7, 2, 1, 3}));
  EXPECT_EQ(SplitMix64(0).Next(), 0xe220a8397b1dcdafULL);  // splitmix64's published first output
}

TEST(Shuffle, PermutationHoldsEveryIndexOnce) {
  for (uint32_t n : {0u, 1u, 2u, 1000u}) {
    std::vector<uint32_t> p = RandomPermutation(n, 3);
    std::sort(p.begin(), p.end());
    for (uint32_t i = 0; i < n; ++i) EXPECT_EQ(p[i], i);
  }
}

TEST(Shuffle, UniformBelowStaysInRange) {
  SplitMix64 rng(1);
  for (uint64_t bound : {uint64_t{1}, uint64_t{3}, (uint64_t{1} << 63) + 1, ~uint64_t{0}}) {
    for (int i = 0; i < 100; ++i) EXPECT_LT(UniformBelow(rng, bound), bound);
  }
}

TEST_F(LoaderTest, NaturalOrderWalksShardsInPathOrder) {
  ThreeShards();
  auto loader = Open(/*shuffle=*/false);
  ASSERT_NE(loader, nullptr);
  EXPECT_EQ(loader->sequences_per_epoch(), 12u);
  ASSERT_EQ(loader->shards().size(), 3u);
  EXPECT_EQ(loader->sequences_in_shard(1), 3);
  EXPECT_EQ(Seq(*loader, 0), Expected(1, 0, 4));
  EXPECT_EQ(Seq(*loader, 4), Expected(1, 4, 4));
  EXPECT_EQ(Seq(*loader, 5), Expected(2, 0, 4));
  EXPECT_EQ(Seq(*loader, 7), Expected(2, 2, 4));
  EXPECT_EQ(Seq(*loader, 8), Expected(3, 0, 4));
  EXPECT_EQ(Seq(*loader, 11), Expected(3, 3, 4));
  EXPECT_EQ(Seq(*loader, 12), Expected(1, 0, 4)) << "epoch 1 starts over";
  EXPECT_EQ(loader->Locate(12 * 1000 + 9), (DataLoader::Location{1000, 2, 1}));
}

TEST_F(LoaderTest, GlobsAreUnitedAndSortedByPath) {
  Shard("b.bin", 2, 9);
  Shard("a.bin", 1, 9);
  Shard("c.bin", 3, 9);
  auto loader =
      Open(false, 0, 4,
           {(dir_ / "c.bin").string(), (dir_ / "*.bin").string(), (dir_ / "a.bin").string()});
  ASSERT_NE(loader, nullptr);
  ASSERT_EQ(loader->shards().size(), 3u) << "a file matched twice is used once";
  EXPECT_EQ(loader->shards()[0].path(), dir_ / "a.bin");
  EXPECT_EQ(loader->shards()[2].path(), dir_ / "c.bin");
  EXPECT_EQ(Seq(*loader, 0), Expected(1, 0, 4));
}

TEST_F(LoaderTest, GlobMatchingNothingIsNamed) {
  ThreeShards();
  std::string missing = (dir_ / "val_*.bin").string();
  auto loader = DataLoader::Open(
      {.globs = {(dir_ / "s_*.bin").string(), missing}, .seq_len = 4, .vocab_size = kVocab});
  EXPECT_EQ(loader.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(loader.status()), "shard glob \"" + missing + "\" matches no file");
}

TEST_F(LoaderTest, RelativeGlobIsRejected) {
  auto loader = DataLoader::Open({.globs = {"data/*.bin"}, .seq_len = 4, .vocab_size = kVocab});
  EXPECT_EQ(loader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(loader.status()), "shard glob \"data/*.bin\" is not absolute");
}

TEST_F(LoaderTest, ShardWithoutASequenceIsNamed) {
  ThreeShards();
  Shard("s_3.bin", 4, 4);  // 4 tokens: T + 1 = 5 needed
  auto loader = DataLoader::Open(
      {.globs = {(dir_ / "s_*.bin").string()}, .seq_len = 4, .vocab_size = kVocab});
  EXPECT_EQ(loader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(loader.status()),
            (dir_ / "s_3.bin").string() + ": 4 tokens hold no sequence of T + 1 = 5 tokens");
}

TEST_F(LoaderTest, InvalidShardFailsTheOpen) {
  ThreeShards();
  auto loader =
      DataLoader::Open({.globs = {(dir_ / "s_*.bin").string()}, .seq_len = 4, .vocab_size = 30000});
  EXPECT_EQ(loader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(loader.status()),
            (dir_ / "s_2.bin").string() +
                ": byte 1024: token 0 is 30000, not below the vocabulary size 30000");
}

TEST_F(LoaderTest, SequenceIsAPureFunctionOfTheIndex) {
  ThreeShards();
  auto a = Open(true);
  auto b = Open(true);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  // Far-apart indices in a scrambled order, so caches cannot make the answers agree.
  std::vector<uint64_t> gs = {5, 1000003, 17, 5, 36, 2, 999999999999ULL, 17, 0, 12, 11};
  std::vector<std::vector<int32_t>> first;
  for (uint64_t g : gs) first.push_back(Seq(*a, g));
  for (size_t i = gs.size(); i-- > 0;) {
    EXPECT_EQ(Seq(*a, gs[i]), first[i]) << "g = " << gs[i];
    EXPECT_EQ(Seq(*b, gs[i]), first[i]) << "g = " << gs[i];
  }
}

TEST_F(LoaderTest, ShuffleTakesEverySequenceOncePerEpoch) {
  ThreeShards();
  auto loader = Open(true);
  ASSERT_NE(loader, nullptr);
  const uint64_t n = loader->sequences_per_epoch();
  for (uint64_t epoch : {0u, 1u, 5u}) {
    std::set<std::pair<size_t, int64_t>> seen;
    for (uint64_t g = epoch * n; g < (epoch + 1) * n; ++g) {
      DataLoader::Location loc = loader->Locate(g);
      EXPECT_EQ(loc.epoch, epoch);
      ASSERT_LT(loc.sequence, loader->sequences_in_shard(loc.shard));
      EXPECT_TRUE(seen.insert({loc.shard, loc.sequence}).second) << "g = " << g;
      EXPECT_EQ(Seq(*loader, g), Expected(static_cast<int>(loc.shard) + 1, loc.sequence, 4));
    }
    EXPECT_EQ(seen.size(), n);
  }
}

std::vector<DataLoader::Location> Epoch(const DataLoader& loader, uint64_t epoch) {
  std::vector<DataLoader::Location> out;
  const uint64_t n = loader.sequences_per_epoch();
  for (uint64_t g = epoch * n; g < (epoch + 1) * n; ++g) {
    DataLoader::Location loc = loader.Locate(g);
    loc.epoch = 0;  // compare the order only
    out.push_back(loc);
  }
  return out;
}

TEST_F(LoaderTest, EpochsAndSeedsGiveDifferentOrders) {
  ThreeShards();
  auto loader = Open(true, 7);
  auto other_seed = Open(true, 8);
  auto natural = Open(false);
  ASSERT_NE(loader, nullptr);
  ASSERT_NE(other_seed, nullptr);
  ASSERT_NE(natural, nullptr);
  EXPECT_NE(Epoch(*loader, 0), Epoch(*loader, 1));
  EXPECT_NE(Epoch(*loader, 0), Epoch(*other_seed, 0));
  EXPECT_NE(Epoch(*loader, 0), Epoch(*natural, 0));
  EXPECT_EQ(Epoch(*natural, 0), Epoch(*natural, 3)) << "without shuffle every epoch is alike";
  // The shard order is shuffled too: over a few epochs, more than one shard comes first.
  std::set<size_t> first_shards;
  for (uint64_t e = 0; e < 10; ++e) first_shards.insert(Epoch(*loader, e).front().shard);
  EXPECT_GT(first_shards.size(), 1u);
}

TEST_F(LoaderTest, ConcurrentReadersSeeTheSameSequences) {
  ThreeShards();
  auto loader = Open(true);
  ASSERT_NE(loader, nullptr);
  const uint64_t count = 12 * 40;  // 40 epochs, so the caches keep evicting
  std::vector<std::vector<int32_t>> want;
  {
    auto reference = Open(true);
    for (uint64_t g = 0; g < count; ++g) want.push_back(Seq(*reference, g));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < count; ++i) {
        uint64_t g = (i * 7 + static_cast<uint64_t>(t) * 101) % count;
        if (Seq(*loader, g) != want[g]) ++mismatches[static_cast<size_t>(t)];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST_F(LoaderTest, FingerprintFollowsNamesCountsAndSeqLenNotDirectory) {
  ThreeShards();
  uint64_t base = Open(true)->fingerprint();
  EXPECT_EQ(Open(false, 99)->fingerprint(), base) << "order settings are not data";
  EXPECT_NE(Open(true, 7, 5)->fingerprint(), base) << "T is part of it";

  fs::path moved = dir_ / "moved";
  fs::create_directories(moved);
  for (const char* name : {"s_0.bin", "s_1.bin", "s_2.bin"}) fs::copy(dir_ / name, moved / name);
  EXPECT_EQ(Open(true, 7, 4, {(moved / "s_*.bin").string()})->fingerprint(), base);

  Shard("s_1.bin", 2, 16);  // one more token
  EXPECT_NE(Open(true)->fingerprint(), base);
}

TEST_F(LoaderTest, CheckResumeAcceptsTheSameDataAndOrderOnly) {
  ThreeShards();
  auto loader = Open(true, 7);
  LoaderState saved = loader->State(1234);
  EXPECT_EQ(saved, (LoaderState{1234, 7, true, loader->fingerprint()}));
  EXPECT_TRUE(Open(true, 7)->CheckResume(saved).ok());
  EXPECT_EQ(Open(true, 8)->CheckResume(saved).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Open(false, 7)->CheckResume(saved).code(), absl::StatusCode::kFailedPrecondition);
  Shard("s_2.bin", 3, 30);
  absl::Status changed = Open(true, 7)->CheckResume(saved);
  EXPECT_EQ(changed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(Message(changed).find("the training data changed since the checkpoint"),
            std::string::npos)
      << changed;
}

TEST(LoaderState, JsonRoundTrips) {
  LoaderState s{.next_sequence = 18446744073709551615ULL,
                .seed = 1234,
                .shuffle = false,
                .fingerprint = 0x00ab00cd00ef0012ULL};
  nlohmann::json j = LoaderStateToJson(s);
  EXPECT_EQ(j.dump(),
            "{\"fingerprint\":\"00ab00cd00ef0012\",\"next_sequence\":18446744073709551615,"
            "\"seed\":1234,\"shuffle\":false}");
  absl::StatusOr<LoaderState> back = LoaderStateFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, s);
}

TEST(LoaderState, JsonErrorsNameTheKey) {
  auto error = [](const std::string& text) {
    return Message(LoaderStateFromJson(nlohmann::json::parse(text)).status());
  };
  const std::string fp = "\"fingerprint\":\"0000000000000001\"";
  EXPECT_EQ(error("[1]"), "loader state: expected an object, got array");
  EXPECT_EQ(error("{\"seed\":1,\"shuffle\":true," + fp + "}"),
            "loader state: \"next_sequence\": missing");
  EXPECT_EQ(error("{\"next_sequence\":-1,\"seed\":1,\"shuffle\":true," + fp + "}"),
            "loader state: \"next_sequence\": -1 is negative");
  EXPECT_EQ(error("{\"next_sequence\":1,\"seed\":\"1\",\"shuffle\":true," + fp + "}"),
            "loader state: \"seed\": expected an unsigned integer, got string");
  EXPECT_EQ(error("{\"next_sequence\":1,\"seed\":1,\"shuffle\":1," + fp + "}"),
            "loader state: \"shuffle\": expected a boolean, got number");
  EXPECT_EQ(error("{\"next_sequence\":1,\"seed\":1,\"shuffle\":true,\"fingerprint\":\"xyz\"}"),
            "loader state: \"fingerprint\": checksum \"xyz\" is not 16 hex digits");
  EXPECT_EQ(error("{\"next_sequence\":1,\"seed\":1,\"shuffle\":true,\"epoch\":2," + fp + "}"),
            "loader state: \"epoch\": unknown key");
}

// The sequences of step `step` as ranks take them: for each micro-step a, rank 0's
// micro-batch, then rank 1's, ..., so the list is the order a concatenated all-gather has.
std::vector<uint64_t> StepSequences(uint64_t step, int64_t global_batch, int64_t micro_batch,
                                    int world_size) {
  const int64_t micro_steps = global_batch / (micro_batch * world_size);
  std::vector<uint64_t> out;
  for (int64_t a = 0; a < micro_steps; ++a) {
    for (int r = 0; r < world_size; ++r) {
      uint64_t first = MicroBatchStart(step * static_cast<uint64_t>(global_batch), micro_batch,
                                       world_size, a, r);
      for (int64_t i = 0; i < micro_batch; ++i) out.push_back(first + static_cast<uint64_t>(i));
    }
  }
  return out;
}

TEST_F(LoaderTest, GlobalBatchIsTheSameForAnyNumberOfRanks) {
  ThreeShards();
  auto loader = Open(true);
  ASSERT_NE(loader, nullptr);
  constexpr int64_t kGlobal = 8;
  constexpr int64_t kMicro = 2;
  for (uint64_t step = 0; step < 5; ++step) {  // 40 sequences: crosses three epochs
    std::vector<uint64_t> one = StepSequences(step, kGlobal, kMicro, 1);
    std::vector<uint64_t> want(kGlobal);
    for (int64_t i = 0; i < kGlobal; ++i) want[static_cast<size_t>(i)] = step * kGlobal + i;
    EXPECT_EQ(one, want);
    for (int world : {2, 4}) {
      std::vector<uint64_t> w = StepSequences(step, kGlobal, kMicro, world);
      EXPECT_EQ(w, one) << "step " << step << ", " << world << " ranks";
      for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(Seq(*loader, w[i]), Seq(*loader, one[i]));
    }
  }
}

}  // namespace
}  // namespace belay::data

// manifest.json: round trip, strict validation naming file and field, shard verification.
#include "common/ckpt/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/test_dir.h"
#include "worker/ckpt/shard_file.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

class ManifestTest : public TempDirTest {
 protected:
  // Two real shard files in <dir>/step and a manifest describing them.
  Manifest WriteStep() {
    step_dir_ = dir() / "step";
    EXPECT_TRUE(fs::create_directories(step_dir_));
    Manifest m;
    m.campaign = "gpt2-small";
    m.step = 1200;
    m.world_size = 2;
    m.created_unix = 1716200000;
    m.metrics = {{"loss", 3.25}, {"tokens", 78643200}};
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<float> data(1000, static_cast<float>(rank));
      ShardWriter w;
      EXPECT_TRUE(
          w.Add("p", static_cast<uint64_t>(rank) * 1000, 2000, std::span<const float>(data)).ok());
      absl::StatusOr<ShardFileInfo> info = w.Write(step_dir_ / ShardFileName(rank));
      EXPECT_TRUE(info.ok()) << info.status();
      m.shards.push_back({rank, ShardFileName(rank), info->bytes, info->xxh3});
    }
    return m;
  }

  // The manifest's JSON with `edit` applied, parsed back.
  absl::Status ParseEdited(const Manifest& m, const std::function<void(json&)>& edit) {
    json doc = json::parse(ManifestToJson(m));
    edit(doc);
    return ManifestFromJson(doc.dump(), "/ck/step/manifest.json").status();
  }

  fs::path step_dir_;
};

TEST_F(ManifestTest, RoundTripsThroughTheFile) {
  Manifest m = WriteStep();
  ASSERT_TRUE(WriteManifest(step_dir_, m).ok());
  absl::StatusOr<Manifest> back = ReadManifest(step_dir_);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->format, 1);
  EXPECT_EQ(back->campaign, "gpt2-small");
  EXPECT_EQ(back->step, 1200);
  EXPECT_EQ(back->world_size, 2);
  EXPECT_EQ(back->created_unix, 1716200000);
  EXPECT_EQ(back->metrics, m.metrics);
  ASSERT_EQ(back->shards.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back->shards[i].rank, m.shards[i].rank);
    EXPECT_EQ(back->shards[i].file, m.shards[i].file);
    EXPECT_EQ(back->shards[i].bytes, m.shards[i].bytes);
    EXPECT_EQ(back->shards[i].xxh3, m.shards[i].xxh3);
  }
  // The sum is stored as 16 hex digits, as the docs promise.
  json doc = json::parse(ManifestToJson(m));
  EXPECT_EQ(doc["shards"][1]["xxh3"].get<std::string>(), FormatXxh3(m.shards[1].xxh3));
  // Atomic write leaves no temporary behind.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(step_dir_)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"manifest.json", "rank_00000.bin", "rank_00001.bin"}));
}

TEST_F(ManifestTest, MissingFieldIsNamedWithTheFile) {
  Manifest m = WriteStep();
  for (const char* field :
       {"format", "campaign", "step", "world_size", "shards", "metrics", "created_unix"}) {
    absl::Status s = ParseEdited(m, [&](json& d) { d.erase(field); });
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << field;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(std::string("/ck/step/manifest.json: ") + field + ": missing"));
  }
  for (const char* field : {"rank", "file", "bytes", "xxh3"}) {
    absl::Status s = ParseEdited(m, [&](json& d) { d["shards"][1].erase(field); });
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(std::string("shards[1].") + field + ": missing"));
  }
}

TEST_F(ManifestTest, WrongTypesAndValuesAreRejected) {
  Manifest m = WriteStep();
  struct Case {
    const char* field;
    std::function<void(json&)> edit;
  };
  const std::vector<Case> cases = {
      {"format", [](json& d) { d["format"] = 2; }},
      {"format", [](json& d) { d["format"] = "1"; }},
      {"step", [](json& d) { d["step"] = -1; }},
      {"step", [](json& d) { d["step"] = 1.5; }},
      {"world_size", [](json& d) { d["world_size"] = 0; }},
      {"shards", [](json& d) { d["world_size"] = 3; }},
      {"shards", [](json& d) { d["shards"] = json::object(); }},
      {"metrics", [](json& d) { d["metrics"] = json::array(); }},
      {"campaign", [](json& d) { d["campaign"] = 7; }},
      {"shards[1].rank", [](json& d) { d["shards"][1]["rank"] = 0; }},
      {"shards[1].file", [](json& d) { d["shards"][1]["file"] = "../../etc/passwd"; }},
      {"shards[1].bytes", [](json& d) { d["shards"][1]["bytes"] = -5; }},
      {"shards[1].xxh3", [](json& d) { d["shards"][1]["xxh3"] = "abc"; }},
      {"shards[0]", [](json& d) { d["shards"][0] = 5; }},
  };
  for (const Case& c : cases) {
    absl::Status s = ParseEdited(m, c.edit);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(c.field) + ": ")) << s;
  }
  EXPECT_EQ(ManifestFromJson("{not json", "m.json").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ManifestFromJson("[]", "m.json").status().code(), absl::StatusCode::kDataLoss);
  // Unknown keys are room for later optional fields.
  EXPECT_TRUE(ParseEdited(m, [](json& d) { d["comment"] = "later"; }).ok());
}

TEST_F(ManifestTest, WriteRefusesAnInvalidManifest) {
  Manifest m = WriteStep();
  m.world_size = 3;  // but two shards
  EXPECT_EQ(WriteManifest(step_dir_, m).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(step_dir_ / kManifestFileName));
}

TEST_F(ManifestTest, ReadManifestReportsAbsenceAsNotFound) {
  EXPECT_EQ(ReadManifest(dir()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ManifestTest, VerifyShardsAcceptsIntactShards) {
  Manifest m = WriteStep();
  EXPECT_TRUE(VerifyShards(step_dir_, m).ok());
}

TEST_F(ManifestTest, VerifyShardsNamesAShardWithAFlippedByte) {
  Manifest m = WriteStep();
  const fs::path shard = step_dir_ / ShardFileName(1);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(500);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(500);
    f.write(&c, 1);
  }
  absl::Status s = VerifyShards(step_dir_, m);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank_00001.bin"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("checksum mismatch"));
}

TEST_F(ManifestTest, VerifyShardsNamesAShardOfTheWrongSize) {
  Manifest m = WriteStep();
  fs::resize_file(step_dir_ / ShardFileName(0), m.shards[0].bytes - 1);
  absl::Status s = VerifyShards(step_dir_, m);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank_00000.bin"));
}

TEST_F(ManifestTest, VerifyShardsReportsAMissingShardAsNotFound) {
  Manifest m = WriteStep();
  fs::remove(step_dir_ / ShardFileName(1));
  absl::Status s = VerifyShards(step_dir_, m);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("rank_00001.bin"));
}

// A map of two tensors over two ranks: "p" split at 1000, "q" all on rank 1.
ShardMap TwoRankMap() {
  ShardMap map;
  map.Add("p", 2000, {0, 0, 1000});
  map.Add("p", 2000, {1, 1000, 1000});
  map.Add("q", 7, {1, 0, 7});
  return map;
}

TEST_F(ManifestTest, ShardMapRoundTripsAndFindsRanges) {
  Manifest m = WriteStep();
  m.shard_map = TwoRankMap();
  ASSERT_TRUE(WriteManifest(step_dir_, m).ok());
  absl::StatusOr<Manifest> back = ReadManifest(step_dir_);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->shard_map.has_value());
  EXPECT_EQ(*back->shard_map, *m.shard_map);
  // One range string per entry: "<tensor> <offset> <count>".
  json doc = json::parse(ManifestToJson(m));
  EXPECT_EQ(doc["shard_map"]["ranks"][1][0], "p 1000 1000");
  EXPECT_EQ(doc["shard_map"]["tensors"]["q"], 7);

  const ShardMap& map = *back->shard_map;
  EXPECT_EQ(map.Find("p", 900, 200), (std::vector<ShardRange>{{0, 900, 100}, {1, 1000, 100}}));
  EXPECT_EQ(map.Find("q", 2, 3), (std::vector<ShardRange>{{1, 2, 3}}));
  EXPECT_TRUE(map.Find("r", 0, 1).empty());
  EXPECT_EQ(map.OfRank(1).size(), 2u);
}

TEST_F(ManifestTest, CorruptShardMapsAreRejectedNamingTheProblem) {
  Manifest m = WriteStep();
  m.shard_map = TwoRankMap();
  auto expect = [&](const std::function<void(json&)>& edit, const std::string& message) {
    absl::Status s = ParseEdited(m, edit);
    EXPECT_TRUE(absl::IsDataLoss(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(message));
  };
  // A range removed: a gap.
  expect([](json& d) { d["shard_map"]["ranks"][0] = json::array(); },
         "shard_map: p: elements [0, 1000) are in no shard");
  // A range grown: an overlap.
  expect([](json& d) { d["shard_map"]["ranks"][0][0] = "p 0 1001"; },
         "p: elements from 1000 are in two shards");
  // The tail missing.
  expect([](json& d) { d["shard_map"]["ranks"][1][0] = "p 1000 999"; },
         "p: elements [1999, 2000) are in no shard");
  expect([](json& d) { d["shard_map"]["ranks"][1][1] = "r 0 7"; },
         "shard_map.ranks[1][1]: tensor r is not in shard_map.tensors");
  expect([](json& d) { d["shard_map"]["ranks"][1][1] = "q 0 8"; },
         "range [0, +8) is not inside q's 7 elements");
  expect([](json& d) { d["shard_map"]["ranks"][1][1] = "q 0"; },
         "shard_map.ranks[1][1]: must be a string \"<tensor> <offset> <count>\"");
  expect([](json& d) { d["shard_map"]["ranks"][1][1] = "q x 7"; }, "must be a string");
  expect([](json& d) { d["shard_map"]["ranks"].erase(1); }, "must be an array of 2 lists");
  expect([](json& d) { d["shard_map"]["tensors"]["q"] = -1; },
         "shard_map.tensors.q: must be a positive integer");
  expect([](json& d) { d["shard_map"].erase("tensors"); }, "shard_map.tensors: missing");
}

}  // namespace
}  // namespace belay::ckpt

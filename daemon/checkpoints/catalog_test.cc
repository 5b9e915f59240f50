// Catalog rules: assembling shard reports, the manifest from the reported slices (and its
// refusals), verification against the files, retention.
#include "daemon/checkpoints/catalog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <limits>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/test_dir.h"

namespace belay::checkpoints {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Rank r of `world` holds elements [r*n/world, (r+1)*n/world) of a 10-element tensor "w" and
// all of "b" (3 elements) when r == 0.
pb::CheckpointShard Shard(const pb::Checkpoint& ck, int rank, int world, int64_t bytes = 100,
                          uint64_t sum = 7) {
  pb::CheckpointShard s;
  s.set_step(ck.step());
  s.set_rank(rank);
  s.set_path((fs::path(ck.dir()) / ckpt::ShardFileName(rank)).string());
  s.set_bytes(bytes);
  s.set_xxh3(sum + static_cast<uint64_t>(rank));
  pb::TensorSlice* w = s.add_tensors();
  w->set_name("w");
  w->set_dtype("f32");
  w->add_shape(10);
  w->set_element_offset(rank * 10 / world);
  w->set_element_count((rank + 1) * 10 / world - rank * 10 / world);
  if (rank == 0) {
    pb::TensorSlice* b = s.add_tensors();
    b->set_name("b");
    b->set_dtype("f32");
    b->add_shape(3);
    b->set_element_count(3);
  }
  return s;
}

TEST(Catalog, ShardsCompleteInAnyOrderAndRepeatsAreHarmless) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 3, "/ck/c-1/step_000000040");
  EXPECT_EQ(ck.state(), pb::CHECKPOINT_STATE_PENDING);
  EXPECT_EQ(*AddShard(ck, Shard(ck, 2, 3)), ShardAdded::kAdded);
  EXPECT_EQ(*AddShard(ck, Shard(ck, 0, 3)), ShardAdded::kAdded);
  EXPECT_EQ(*AddShard(ck, Shard(ck, 2, 3)), ShardAdded::kRepeat);
  EXPECT_EQ(*AddShard(ck, Shard(ck, 1, 3)), ShardAdded::kComplete);
  ASSERT_EQ(ck.shards_size(), 3);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(ck.shards(r).rank(), r);
  EXPECT_EQ(ck.total_bytes(), 300);
}

TEST(Catalog, BadReportsAreRefusedNamingTheField) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 2, "/ck/c-1/step_000000040");
  pb::CheckpointShard s = Shard(ck, 0, 2);
  s.set_rank(2);
  EXPECT_THAT(AddShard(ck, s).status().message(), HasSubstr("rank: outside 0..1"));
  s = Shard(ck, 0, 2);
  s.set_step(41);
  EXPECT_THAT(AddShard(ck, s).status().message(), HasSubstr("step: the checkpoint is step 40"));
  s = Shard(ck, 0, 2);
  s.set_path("/etc/passwd");
  EXPECT_THAT(AddShard(ck, s).status().message(), HasSubstr("path: \"/etc/passwd\""));
  s = Shard(ck, 0, 2);
  s.set_path("/ck/c-1/step_000000040/rank_00001.bin");  // another rank's file
  EXPECT_FALSE(AddShard(ck, s).ok());
  s = Shard(ck, 0, 2);
  s.set_bytes(0);
  EXPECT_THAT(AddShard(ck, s).status().message(), HasSubstr("bytes"));
  // A shard cannot change once reported.
  ASSERT_TRUE(AddShard(ck, Shard(ck, 0, 2)).ok());
  absl::StatusOr<ShardAdded> changed = AddShard(ck, Shard(ck, 0, 2, 100, 99));
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ck.shards_size(), 1);
}

TEST(Catalog, AbsurdSizesAreRefusedAndTheTotalNeverOverflows) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 3, "/ck/c-1/step_000000040");
  EXPECT_THAT(AddShard(ck, Shard(ck, 0, 3, kMaxShardBytes + 1)).status().message(),
              HasSubstr("bytes"));
  EXPECT_THAT(AddShard(ck, Shard(ck, 0, 3, -5)).status().message(), HasSubstr("bytes"));
  // A record already near the largest total (as a hostile rank's reports could make it).
  ck.set_total_bytes(std::numeric_limits<int64_t>::max() - 10);
  absl::StatusOr<ShardAdded> over = AddShard(ck, Shard(ck, 1, 3, 11));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument) << over.status();
  EXPECT_EQ(ck.shards_size(), 0) << "a refused report changes nothing";
  EXPECT_EQ(ck.total_bytes(), std::numeric_limits<int64_t>::max() - 10);
}

TEST(Catalog, ManifestCarriesTheAssembledShardMap) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 3, "/ck/c-1/step_000000040");
  for (int r : {1, 2, 0}) ASSERT_TRUE(AddShard(ck, Shard(ck, r, 3)).ok());
  ck.mutable_metrics()->set_loss(2.5);
  ck.mutable_metrics()->set_tokens_seen(4096);
  absl::StatusOr<ckpt::Manifest> m = BuildManifest(ck, "c-1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->campaign, "c-1");
  EXPECT_EQ(m->step, 40);
  EXPECT_EQ(m->world_size, 3);
  ASSERT_EQ(m->shards.size(), 3u);
  EXPECT_EQ(m->shards[1].file, "rank_00001.bin");
  EXPECT_EQ(m->shards[1].xxh3, 8u);
  ASSERT_TRUE(m->shard_map.has_value());
  EXPECT_EQ(m->shard_map->totals.at("w"), 10u);
  EXPECT_THAT(
      m->shard_map->Find("w", 0, 10),
      ElementsAre(ckpt::ShardRange{0, 0, 3}, ckpt::ShardRange{1, 3, 3}, ckpt::ShardRange{2, 6, 4}));
  EXPECT_EQ(m->metrics["loss"].get<double>(), 2.5);
  EXPECT_EQ(m->metrics["tokens"].get<int64_t>(), 4096);
  // What is written is what readers accept.
  EXPECT_TRUE(ckpt::ManifestFromJson(ckpt::ManifestToJson(*m), "test").ok());
}

TEST(Catalog, ManifestRefusesSlicesThatDoNotCoverTheTensors) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 2, "/ck/c-1/step_000000040");
  ASSERT_TRUE(AddShard(ck, Shard(ck, 0, 2)).ok());
  pb::CheckpointShard gap = Shard(ck, 1, 2);
  gap.mutable_tensors(0)->set_element_offset(6);  // leaves element 5 of "w" nowhere
  gap.mutable_tensors(0)->set_element_count(4);
  ASSERT_TRUE(AddShard(ck, gap).ok());
  absl::StatusOr<ckpt::Manifest> m = BuildManifest(ck, "c-1");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(m.status().message(), HasSubstr("shard_map"));

  pb::Checkpoint bare = NewPending("c-1", 40, 2, 1, "/ck/c-1/step_000000040");
  pb::CheckpointShard s = Shard(bare, 0, 1);
  s.clear_tensors();
  ASSERT_TRUE(AddShard(bare, s).ok());
  EXPECT_THAT(BuildManifest(bare, "c-1").status().message(),
              HasSubstr("no rank reported the tensors"));
  // Incomplete: refused.
  pb::Checkpoint half = NewPending("c-1", 40, 2, 2, "/ck/c-1/step_000000040");
  ASSERT_TRUE(AddShard(half, Shard(half, 0, 2)).ok());
  EXPECT_EQ(BuildManifest(half, "c-1").status().code(), absl::StatusCode::kFailedPrecondition);
}

class CatalogFiles : public ckpt::TempDirTest {};

TEST_F(CatalogFiles, VerifyNamesTheFirstBadShard) {
  pb::Checkpoint ck = NewPending("c-1", 40, 2, 2, dir() / "step_000000040");
  fs::create_directories(ck.dir());
  for (int r = 0; r < 2; ++r) {
    const fs::path p = fs::path(ck.dir()) / ckpt::ShardFileName(r);
    std::ofstream(p) << "shard " << r;
    pb::CheckpointShard s = Shard(ck, r, 2, static_cast<int64_t>(fs::file_size(p)));
    s.set_xxh3(*Xxh3File(p));
    ASSERT_TRUE(AddShard(ck, s).ok());
  }
  EXPECT_EQ(VerifyShards(ck), "");
  const fs::path second = fs::path(ck.dir()) / "rank_00001.bin";
  std::ofstream(second) << "shard X";  // same size, other bytes
  EXPECT_THAT(VerifyShards(ck), HasSubstr("rank_00001.bin: checksum mismatch"));
  std::ofstream(second) << "longer shard";
  EXPECT_THAT(VerifyShards(ck), HasSubstr("when it was written"));
  fs::remove(second);
  EXPECT_THAT(VerifyShards(ck), HasSubstr("shard of rank 1 is missing"));
}

std::vector<pb::Checkpoint> Committed(std::initializer_list<int64_t> steps) {
  std::vector<pb::Checkpoint> out;
  for (int64_t s : steps) {
    pb::Checkpoint ck;
    ck.set_step(s);
    ck.set_state(pb::CHECKPOINT_STATE_COMMITTED);
    out.push_back(ck);
  }
  return out;
}

TEST(Retention, KeepsTheNewestTheMultiplesAndTheProtected) {
  const std::vector<pb::Checkpoint> all = Committed({100, 200, 300, 400, 500, 600});
  EXPECT_THAT(PlanRetention(all, {2, 0}, {}), ElementsAre(100, 200, 300, 400));
  EXPECT_THAT(PlanRetention(all, {2, 200}, {}), ElementsAre(100, 300));
  EXPECT_THAT(PlanRetention(all, {2, 0}, {300}), ElementsAre(100, 200, 400));
  EXPECT_THAT(PlanRetention(all, {10, 0}, {}), IsEmpty());
  // keep_last below 1 still keeps the newest.
  EXPECT_THAT(PlanRetention(all, {0, 0}, {}), ElementsAre(100, 200, 300, 400, 500));
}

TEST(Retention, OnlyCommittedCheckpointsCountOrGo) {
  std::vector<pb::Checkpoint> all = Committed({100, 200, 300, 400});
  all[1].set_state(pb::CHECKPOINT_STATE_CORRUPT);
  all[3].set_state(pb::CHECKPOINT_STATE_PENDING);
  // Committed: 100 and 300; the newest committed (300) stays even though 400 is newer.
  EXPECT_THAT(PlanRetention(all, {1, 0}, {}), ElementsAre(100));
}

}  // namespace
}  // namespace belay::checkpoints

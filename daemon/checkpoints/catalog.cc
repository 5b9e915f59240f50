// Checkpoint catalog rules: see catalog.h.
#include "daemon/checkpoints/catalog.h"

#include <algorithm>
#include <set>
#include <system_error>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/strings.h"

namespace belay::checkpoints {

namespace fs = std::filesystem;

pb::Checkpoint NewPending(const std::string& campaign_id, int64_t step, int32_t attempt,
                          int32_t world_size, fs::path dir) {
  pb::Checkpoint ck;
  ck.set_campaign_id(campaign_id);
  ck.set_step(step);
  ck.set_attempt_number(attempt);
  ck.set_world_size(world_size);
  ck.set_state(pb::CHECKPOINT_STATE_PENDING);
  ck.set_dir(dir.string());
  return ck;
}

absl::StatusOr<ShardAdded> AddShard(pb::Checkpoint& ck, const pb::CheckpointShard& shard) {
  const std::string what = Cat("shard of rank ", shard.rank(), " for step ", shard.step());
  if (shard.step() != ck.step()) {
    return absl::InvalidArgumentError(Cat(what, ": step: the checkpoint is step ", ck.step()));
  }
  if (shard.rank() < 0 || shard.rank() >= ck.world_size()) {
    return absl::InvalidArgumentError(Cat(what, ": rank: outside 0..", ck.world_size() - 1));
  }
  if (shard.bytes() <= 0 || shard.bytes() > kMaxShardBytes) {
    return absl::InvalidArgumentError(
        Cat(what, ": bytes: ", shard.bytes(), " is not in 1..", kMaxShardBytes));
  }
  const fs::path expected = fs::path(ck.dir()) / ckpt::ShardFileName(shard.rank());
  if (fs::path(shard.path()) != expected) {
    return absl::InvalidArgumentError(
        Cat(what, ": path: \"", shard.path(), "\", expected \"", expected.string(), "\""));
  }
  for (const pb::TensorSlice& t : shard.tensors()) {
    if (t.name().empty() || t.element_count() <= 0 || t.element_offset() < 0 ||
        t.shape_size() == 0) {
      return absl::InvalidArgumentError(
          Cat(what, ": tensors: slice \"", t.name(), "\" has no name, shape or elements"));
    }
  }
  auto* shards = ck.mutable_shards();
  auto at = std::lower_bound(shards->begin(), shards->end(), shard.rank(),
                             [](const pb::CheckpointShard& s, int32_t r) { return s.rank() < r; });
  if (at != shards->end() && at->rank() == shard.rank()) {
    if (at->bytes() == shard.bytes() && at->xxh3() == shard.xxh3()) return ShardAdded::kRepeat;
    return absl::FailedPreconditionError(
        Cat(what, ": already reported as ", at->bytes(), " bytes, xxh3 ", FormatXxh3(at->xxh3()),
            "; now ", shard.bytes(), " bytes, xxh3 ", FormatXxh3(shard.xxh3())));
  }
  int64_t total = 0;
  if (__builtin_add_overflow(ck.total_bytes(), shard.bytes(), &total)) {
    return absl::InvalidArgumentError(
        Cat(what, ": bytes: ", shard.bytes(), " more than a checkpoint can hold"));
  }
  const auto index = at - shards->begin();  // Add may move the elements
  shards->Add(pb::CheckpointShard(shard));
  // Move the appended shard to its rank's place.
  std::rotate(shards->begin() + index, shards->end() - 1, shards->end());
  ck.set_total_bytes(total);
  return shards->size() == ck.world_size() ? ShardAdded::kComplete : ShardAdded::kAdded;
}

absl::StatusOr<ckpt::Manifest> BuildManifest(const pb::Checkpoint& ck,
                                             const std::string& campaign) {
  if (ck.shards_size() != ck.world_size()) {
    return absl::FailedPreconditionError(Cat("checkpoint step ", ck.step(), ": ", ck.shards_size(),
                                             " of ", ck.world_size(), " shards reported"));
  }
  ckpt::Manifest m;
  m.campaign = campaign;
  m.step = ck.step();
  m.world_size = ck.world_size();
  ckpt::ShardMap map;
  bool any_slices = false;
  for (const pb::CheckpointShard& s : ck.shards()) {
    m.shards.push_back(
        {s.rank(), ckpt::ShardFileName(s.rank()), static_cast<uint64_t>(s.bytes()), s.xxh3()});
    for (const pb::TensorSlice& t : s.tensors()) {
      uint64_t total = 1;
      for (int64_t d : t.shape()) total *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
      map.Add(t.name(), total,
              {s.rank(), static_cast<uint64_t>(t.element_offset()),
               static_cast<uint64_t>(t.element_count())});
      any_slices = true;
    }
  }
  if (!any_slices) {
    return absl::DataLossError(
        Cat("checkpoint step ", ck.step(), ": no rank reported the tensors of its shard"));
  }
  // Ranges as ManifestFromJson wants them: sorted by offset within each tensor.
  for (auto& [name, ranges] : map.ranges) {
    std::sort(ranges.begin(), ranges.end(),
              [](const ckpt::ShardRange& a, const ckpt::ShardRange& b) {
                return a.offset != b.offset ? a.offset < b.offset : a.rank < b.rank;
              });
  }
  m.shard_map = std::move(map);
  const pb::StepMetrics& x = ck.metrics();
  m.metrics = {{"loss", x.loss()},
               {"lr", x.lr()},
               {"grad_norm", x.grad_norm()},
               {"tokens", x.tokens_seen()},
               {"attempt", ck.attempt_number()}};
  m.created_unix = ck.has_committed_time() ? ck.committed_time().seconds() : 0;
  // The validation every reader applies (coverage, one shard per rank, names).
  absl::StatusOr<ckpt::Manifest> checked =
      ckpt::ManifestFromJson(ckpt::ManifestToJson(m), Cat("checkpoint step ", ck.step()));
  if (!checked.ok()) return checked.status();
  return m;
}

std::string VerifyShards(const pb::Checkpoint& ck) {
  for (const pb::CheckpointShard& sh : ck.shards()) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(sh.path(), ec);
    if (ec == std::errc::no_such_file_or_directory)
      return Cat(sh.path(), ": shard of rank ", sh.rank(), " is missing");
    if (ec) return Cat(sh.path(), ": shard of rank ", sh.rank(), " cannot be read: ", ec.message());
    if (static_cast<int64_t>(size) != sh.bytes()) {
      return Cat(sh.path(), ": ", size, " bytes, ", sh.bytes(), " when it was written");
    }
    absl::StatusOr<uint64_t> sum = Xxh3File(sh.path());
    if (!sum.ok()) return std::string(sum.status().message());
    if (*sum != sh.xxh3()) {
      return Cat(sh.path(), ": checksum mismatch: written as ", FormatXxh3(sh.xxh3()), ", now ",
                 FormatXxh3(*sum));
    }
  }
  return "";
}

std::vector<int64_t> PlanRetention(const std::vector<pb::Checkpoint>& all,
                                   const RetentionPolicy& policy,
                                   const std::vector<int64_t>& protect) {
  std::vector<int64_t> committed;
  for (const pb::Checkpoint& ck : all) {
    if (ck.state() == pb::CHECKPOINT_STATE_COMMITTED) committed.push_back(ck.step());
  }
  std::sort(committed.begin(), committed.end());
  const size_t keep = static_cast<size_t>(std::max<int64_t>(policy.keep_last, 1));
  const std::set<int64_t> protected_steps(protect.begin(), protect.end());
  std::vector<int64_t> out;
  for (size_t i = 0; i + keep < committed.size(); ++i) {
    const int64_t step = committed[i];
    if (policy.keep_every > 0 && step % policy.keep_every == 0) continue;
    if (protected_steps.count(step) > 0) continue;
    out.push_back(step);
  }
  return out;
}

}  // namespace belay::checkpoints

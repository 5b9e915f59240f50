// Opening and checking the shard files of one checkpoint step.
#include "worker/ckpt/step_shards.h"

#include <string>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace belay::ckpt {

namespace fs = std::filesystem;

absl::Status MissingShard(const fs::path& file, int rank, int world_size) {
  return absl::NotFoundError(
      Cat(file.string(), ": shard of rank ", rank, " (of ", world_size, ") is missing"));
}

absl::Status CheckShardFiles(const Manifest& manifest, const fs::path& step_dir) {
  for (const ManifestShard& s : manifest.shards) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(step_dir / s.file, ec);
    if (ec) return MissingShard(step_dir / s.file, s.rank, manifest.world_size);
    if (size != s.bytes) {
      return absl::DataLossError(Cat((step_dir / s.file).string(), ": shard of rank ", s.rank,
                                     " is ", size, " bytes, the manifest says ", s.bytes));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const ShardReader*> StepShards::Of(int rank) {
  if (auto it = readers_.find(rank); it != readers_.end()) return &it->second;
  const ManifestShard& s = manifest_.shards[static_cast<size_t>(rank)];
  absl::StatusOr<ShardReader> opened = ShardReader::Open(step_dir_ / s.file);
  if (!opened.ok()) {
    if (absl::IsNotFound(opened.status()))
      return MissingShard(step_dir_ / s.file, rank, manifest_.world_size);
    return opened.status();
  }
  std::vector<std::pair<std::string, ShardRange>> want = manifest_.shard_map->OfRank(rank);
  std::vector<std::pair<std::string, ShardRange>> have;
  for (const ShardEntry& e : opened->entries()) have.push_back({e.name, {rank, e.offset, e.count}});
  if (want != have) {
    return absl::DataLossError(Cat(opened->path().string(), ": holds ", have.size(),
                                   " tensor ranges that do not match the ", want.size(),
                                   " the manifest's shard map lists for rank ", rank));
  }
  return &readers_.emplace(rank, std::move(*opened)).first->second;
}

}  // namespace belay::ckpt

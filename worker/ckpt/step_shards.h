// The shard files of one committed checkpoint step, opened as a loader needs them: each
// verified by checksum when first opened and checked against the manifest's shard map.
#pragma once

#include <filesystem>
#include <map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ckpt/manifest.h"
#include "worker/ckpt/shard_file.h"

namespace belay::ckpt {

// NotFound naming the shard file of `rank` (of `world_size`) that is missing.
absl::Status MissingShard(const std::filesystem::path& file, int rank, int world_size);

// Every shard the manifest lists is there with the size it records: NotFound naming a
// missing file (never a checksum error for it), DataLoss naming one of another size.
absl::Status CheckShardFiles(const Manifest& manifest, const std::filesystem::path& step_dir);

// Opens the shards of `step_dir` on demand, each once. Keeps a reference to `manifest`, which
// must have a shard map and outlive this object.
class StepShards {
 public:
  StepShards(const std::filesystem::path& step_dir, const Manifest& manifest)
      : step_dir_(step_dir), manifest_(manifest) {}

  // The verified reader of the shard of `rank` (a rank of the manifest's world): NotFound
  // naming a missing file, DataLoss naming a file whose checksum or format is wrong or
  // whose tensor ranges differ from those the shard map gives that rank.
  absl::StatusOr<const ShardReader*> Of(int rank);

 private:
  std::filesystem::path step_dir_;
  const Manifest& manifest_;
  std::map<int, ShardReader> readers_;
};

}  // namespace belay::ckpt

// manifest.json: what makes a step directory a self-describing checkpoint without the
// daemon — the shard map with sizes and sums, and the metrics at save. Format:
// docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace belay::ckpt {

inline constexpr int kManifestFormat = 1;

struct ManifestShard {
  int rank = 0;
  std::string file;  // name inside the step directory, e.g. "rank_00000.bin"
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;  // of the whole file; "16 hex digits" in JSON
};

struct Manifest {
  int format = kManifestFormat;
  std::string campaign;
  int64_t step = 0;
  int world_size = 0;
  std::vector<ManifestShard> shards;                  // one per rank, in rank order
  nlohmann::json metrics = nlohmann::json::object();  // free-form: loss, tokens, ...
  int64_t created_unix = 0;                           // seconds since the epoch
};

// Pretty-printed JSON (two-space indent, trailing newline).
std::string ManifestToJson(const Manifest& manifest);

// Parses and validates: every field present with the right JSON type, format 1, step >= 0,
// world_size >= 1, exactly one shard per rank 0..world_size-1, file names that stay inside
// the step directory, sums of 16 hex digits. Unknown keys are ignored so that a later writer
// may add optional fields. Errors are DataLoss "<source>: <field>: <problem>", e.g.
// "…/manifest.json: shards[2].xxh3: missing".
absl::StatusOr<Manifest> ManifestFromJson(std::string_view text, std::string_view source);

// Writes <step_dir>/manifest.json atomically (temporary file, fsync, rename, directory fsync).
// The manifest is validated first (InvalidArgument if ManifestFromJson would reject it).
absl::Status WriteManifest(const std::filesystem::path& step_dir, const Manifest& manifest);

// Reads and validates <step_dir>/manifest.json; NotFound if it is absent.
absl::StatusOr<Manifest> ReadManifest(const std::filesystem::path& step_dir);

// Re-hashes every shard the manifest lists and compares size and xxh3. Returns the first
// problem in rank order: NotFound naming a missing shard file, DataLoss naming a shard whose
// size or sum differs.
absl::Status VerifyShards(const std::filesystem::path& step_dir, const Manifest& manifest);

}  // namespace belay::ckpt

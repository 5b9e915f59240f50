// manifest.json: what makes a step directory a self-describing checkpoint without the
// daemon — the shard map with sizes and sums, and the metrics at save. Format:
// docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
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

// Where every element of every logical tensor of a checkpoint lives: which rank's shard
// holds which element range. Written by whoever writes the manifest, from the same plan the
// ranks wrote their shards by; a loader on another world size reads it to find the ranges it
// needs, and checks it against each shard file's own index.
struct ShardRange {
  int rank = 0;
  uint64_t offset = 0;  // first element within the logical tensor
  uint64_t count = 0;
  bool operator==(const ShardRange&) const = default;
};

struct ShardMap {
  std::map<std::string, uint64_t> totals;  // logical tensor name -> elements
  // Per logical tensor, its ranges sorted by offset; together they cover [0, total) once.
  std::map<std::string, std::vector<ShardRange>> ranges;

  // Adds one range (no validation; ManifestFromJson validates what it reads).
  void Add(const std::string& name, uint64_t total, ShardRange range);
  // The ranges of rank `rank`, as (name, range) sorted by name then offset — what that
  // rank's shard file must hold.
  std::vector<std::pair<std::string, ShardRange>> OfRank(int rank) const;
  // The parts of [offset, offset + count) of tensor `name` and the ranks holding them, in
  // offset order (each part clipped to the request). Empty when the name is unknown or the
  // request is out of range.
  std::vector<ShardRange> Find(const std::string& name, uint64_t offset, uint64_t count) const;
  bool operator==(const ShardMap&) const = default;
};

struct Manifest {
  int format = kManifestFormat;
  std::string campaign;
  int64_t step = 0;
  int world_size = 0;
  std::vector<ManifestShard> shards;                  // one per rank, in rank order
  std::optional<ShardMap> shard_map;                  // absent in single-file checkpoints
  nlohmann::json metrics = nlohmann::json::object();  // free-form: loss, tokens, ...
  int64_t created_unix = 0;                           // seconds since the epoch
};

// Pretty-printed JSON (two-space indent, trailing newline).
std::string ManifestToJson(const Manifest& manifest);

// Parses and validates: every field present with the right JSON type, format 1, step >= 0,
// world_size >= 1, exactly one shard per rank 0..world_size-1, file names that stay inside
// the step directory, sums of 16 hex digits; if there is a shard map, one list of ranges per
// rank, every range inside a tensor the map lists, and every tensor's elements covered
// exactly once (no gap, no overlap). Unknown keys are ignored so that a later writer
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

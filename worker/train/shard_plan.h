// How ZeRO divides the parameters, their gradients and their optimizer state over W ranks:
// buckets (the groups whose gradients backward completes together), each padded to a
// multiple of W and cut into W equal slices, one per rank.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model/params.h"

namespace belay::train {

// One bucket: the concatenation of its segments, `elements` long, padded with zeros to
// `padded` = slice · W elements. Rank r owns elements [r·slice, (r+1)·slice) of it (the last
// ranks' slices may end in padding, or be padding only).
struct Bucket {
  int group = 0;  // model::GradientGroups index
  std::vector<model::Segment> segments;
  int64_t elements = 0;
  int64_t slice = 0;
  int64_t padded = 0;
  int64_t shard_offset = 0;  // where this bucket's slice starts in every rank's shard
};

// A run of parameters one rank owns: flat[flat_offset, +size) inside one tensor, kept at
// shard[shard_offset, +size) of that rank's shard.
struct OwnedPiece {
  int tensor = 0;
  int64_t flat_offset = 0;
  int64_t size = 0;
  int64_t shard_offset = 0;
  bool operator==(const OwnedPiece&) const = default;
};

// Buckets are the model's gradient groups in the order backward completes them (the final
// norm, layers L−1 … 0, embeddings). A rank's shard is its slice of every bucket, in bucket order,
// so all ranks have shards of the same size, shard_size() (the sum of the slices). The plan depends
// only on the model and W: every rank computes the same one, and a checkpoint loader can
// compute the plan of the world size that wrote it.
class ShardPlan {
 public:
  // Over a model's gradient groups, in the order backward completes them (the last one the
  // embeddings'): Architecture::GradientGroups, or GPT-2's of a layout.
  ShardPlan(std::vector<std::vector<model::Segment>> groups, int world_size);
  ShardPlan(const model::ParameterLayout& layout, int world_size);

  int world_size() const { return world_size_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int64_t shard_size() const { return shard_size_; }
  // Elements over all buckets, padding included: world_size · shard_size.
  int64_t padded_total() const { return shard_size_ * world_size_; }

  // What `rank` owns, in shard order (padding is owned by nobody and not listed).
  std::vector<OwnedPiece> Owned(int rank) const;
  // The same, for one bucket.
  std::vector<OwnedPiece> OwnedInBucket(size_t bucket, int rank) const;

  // Copies bucket b's elements out of a flat (layout-ordered) buffer into `packed` (padded
  // elements, padding set to 0), and back.
  void Pack(size_t bucket, const float* flat, float* packed) const;
  void Unpack(size_t bucket, const float* packed, float* flat) const;

 private:
  int world_size_;
  std::vector<Bucket> buckets_;
  int64_t shard_size_ = 0;
};

}  // namespace belay::train

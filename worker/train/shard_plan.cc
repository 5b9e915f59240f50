// Buckets, slices and owned pieces of the ZeRO partition.
#include "worker/train/shard_plan.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace belay::train {

ShardPlan::ShardPlan(const model::ParameterLayout& layout, int world_size)
    : ShardPlan(model::GradientGroups(layout), world_size) {}

ShardPlan::ShardPlan(std::vector<std::vector<model::Segment>> groups, int world_size)
    : world_size_(world_size) {
  assert(world_size >= 1);
  for (size_t g = 0; g < groups.size(); ++g) {
    Bucket b;
    b.group = static_cast<int>(g);
    b.segments = std::move(groups[g]);
    for (const model::Segment& s : b.segments) b.elements += s.size;
    b.slice = (b.elements + world_size - 1) / world_size;
    b.padded = b.slice * world_size;
    b.shard_offset = shard_size_;
    shard_size_ += b.slice;
    buckets_.push_back(std::move(b));
  }
}

std::vector<OwnedPiece> ShardPlan::OwnedInBucket(size_t bucket, int rank) const {
  const Bucket& b = buckets_[bucket];
  const int64_t lo = int64_t{rank} * b.slice, hi = lo + b.slice;
  std::vector<OwnedPiece> out;
  int64_t pos = 0;  // position of the segment in the bucket's concatenation
  for (const model::Segment& s : b.segments) {
    const int64_t from = std::max(lo, pos), to = std::min(hi, pos + s.size);
    if (from < to) {
      out.push_back({s.tensor, s.offset + (from - pos), to - from, b.shard_offset + (from - lo)});
    }
    pos += s.size;
  }
  return out;
}

std::vector<OwnedPiece> ShardPlan::Owned(int rank) const {
  std::vector<OwnedPiece> out;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    std::vector<OwnedPiece> p = OwnedInBucket(b, rank);
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

void ShardPlan::Pack(size_t bucket, const float* flat, float* packed) const {
  const Bucket& b = buckets_[bucket];
  float* at = packed;
  for (const model::Segment& s : b.segments) {
    std::memcpy(at, flat + s.offset, static_cast<size_t>(s.size) * sizeof(float));
    at += s.size;
  }
  std::fill(at, packed + b.padded, 0.0f);
}

void ShardPlan::Unpack(size_t bucket, const float* packed, float* flat) const {
  const Bucket& b = buckets_[bucket];
  const float* at = packed;
  for (const model::Segment& s : b.segments) {
    std::memcpy(flat + s.offset, at, static_cast<size_t>(s.size) * sizeof(float));
    at += s.size;
  }
}

}  // namespace belay::train

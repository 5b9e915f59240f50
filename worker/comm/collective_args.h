// What the Communicator implementations share: argument checks, the split of an all-reduce
// buffer into per-rank pieces, and the rank-order sum that makes the fp32 results
// deterministic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"

namespace belay::comm::internal {

// The largest element count one call may move (MPI counts are int).
inline constexpr size_t kMaxCount = 2147483647;

// Elements [start, start + size) of an n-element buffer are rank r's piece: the first
// n mod W ranks get floor(n/W) + 1 elements, the others floor(n/W) (communicator.h).
struct Piece {
  size_t start = 0;
  size_t size = 0;
};
Piece PieceOf(size_t n, int rank, int world_size);

// For a collective between a full buffer of W shards and one shard (reduce-scatter, all-
// gather): InvalidArgument, naming `call`, unless full holds exactly W · shard elements, the
// shard has at most kMaxCount, and the two do not overlap except where `shard` is exactly this
// rank's block of `full`.
absl::Status CheckSharded(std::string_view call, const void* full, size_t full_count,
                          const void* shard, size_t shard_count, size_t element_size, int rank,
                          int world_size);
// True when `shard` is exactly this rank's block of `full` (an in-place call).
bool IsOwnBlock(const void* full, const void* shard, size_t shard_count, size_t element_size,
                int rank);

// InvalidArgument naming `call` when count exceeds kMaxCount.
absl::Status CheckCount(std::string_view call, size_t count);
// InvalidArgument unless 0 <= root < world_size.
absl::Status CheckRoot(int root, int world_size);

// out[i] = ((c_0[i] + c_1[i]) + c_2[i]) + ... in fp32, where `contributions` holds the
// `count` ranks' blocks of out.size() elements one after another. `out` must not overlap
// `contributions`.
void SumInRankOrder(std::span<const float> contributions, size_t count, std::span<float> out);

// The byte counts of CommStats (communicator.h) for one call.
int64_t AllReduceBytes(size_t n, size_t element_size, int rank, int world_size);
int64_t ShardedBytes(size_t shard_count, size_t element_size, int world_size);

}  // namespace belay::comm::internal

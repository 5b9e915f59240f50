// Argument checks, pieces and the rank-order sum shared by the Communicator implementations.
#include "worker/comm/collective_args.h"

#include <cstring>
#include <functional>

#include "common/strings.h"

namespace belay::comm::internal {

Piece PieceOf(size_t n, int rank, int world_size) {
  const size_t w = static_cast<size_t>(world_size);
  const size_t r = static_cast<size_t>(rank);
  const size_t base = n / w;
  const size_t extra = n % w;
  return Piece{.start = r * base + (r < extra ? r : extra), .size = base + (r < extra ? 1 : 0)};
}

namespace {

// Whether byte ranges [a, a + a_len) and [b, b + b_len) share a byte. std::less gives a
// total order over pointers into unrelated objects, where `<` would not.
bool Overlaps(const void* a, size_t a_len, const void* b, size_t b_len) {
  if (a_len == 0 || b_len == 0) return false;
  const auto* pa = static_cast<const std::byte*>(a);
  const auto* pb = static_cast<const std::byte*>(b);
  std::less<const std::byte*> less;
  return less(pa, pb + b_len) && less(pb, pa + a_len);
}

}  // namespace

bool IsOwnBlock(const void* full, const void* shard, size_t shard_count, size_t element_size,
                int rank) {
  return shard_count > 0 && static_cast<const std::byte*>(full) +
                                    static_cast<size_t>(rank) * shard_count * element_size ==
                                static_cast<const std::byte*>(shard);
}

absl::Status CheckSharded(std::string_view call, const void* full, size_t full_count,
                          const void* shard, size_t shard_count, size_t element_size, int rank,
                          int world_size) {
  if (full_count != shard_count * static_cast<size_t>(world_size)) {
    return absl::InvalidArgumentError(
        Cat(call, ": the full buffer has ", full_count, " elements, want world size ", world_size,
            " x shard ", shard_count, " = ", shard_count * static_cast<size_t>(world_size)));
  }
  if (absl::Status s = CheckCount(call, shard_count); !s.ok()) return s;
  if (Overlaps(full, full_count * element_size, shard, shard_count * element_size) &&
      !IsOwnBlock(full, shard, shard_count, element_size, rank)) {
    return absl::InvalidArgumentError(
        Cat(call, ": the shard overlaps the full buffer but is not rank ", rank, "'s block"));
  }
  return absl::OkStatus();
}

absl::Status CheckCount(std::string_view call, size_t count) {
  if (count > kMaxCount) {
    return absl::InvalidArgumentError(
        Cat(call, ": ", count, " elements in one call, at most ", kMaxCount, "; split the buffer"));
  }
  return absl::OkStatus();
}

absl::Status CheckRoot(int root, int world_size) {
  if (root < 0 || root >= world_size) {
    return absl::InvalidArgumentError(
        Cat("Broadcast: root ", root, " is not a rank of a world of ", world_size));
  }
  return absl::OkStatus();
}

void SumInRankOrder(std::span<const float> contributions, size_t count, std::span<float> out) {
  const size_t n = out.size();
  if (n == 0 || count == 0) return;
  std::memcpy(out.data(), contributions.data(), n * sizeof(float));
  // Rank by rank, so each element's additions happen in rank order (and the inner loop
  // vectorizes without reassociating: every lane is a different element).
  for (size_t r = 1; r < count; ++r) {
    const float* c = contributions.data() + r * n;
    for (size_t i = 0; i < n; ++i) out[i] += c[i];
  }
}

int64_t AllReduceBytes(size_t n, size_t element_size, int rank, int world_size) {
  const size_t p = PieceOf(n, rank, world_size).size;
  // Sends every piece but its own, then its summed piece to the W − 1 others.
  return static_cast<int64_t>((n - p + static_cast<size_t>(world_size - 1) * p) * element_size);
}

int64_t ShardedBytes(size_t shard_count, size_t element_size, int world_size) {
  return static_cast<int64_t>(static_cast<size_t>(world_size - 1) * shard_count * element_size);
}

}  // namespace belay::comm::internal

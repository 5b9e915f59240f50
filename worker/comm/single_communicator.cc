// SingleCommunicator: the collectives of a world of one.
#include "worker/comm/single_communicator.h"

#include <cstring>

#include "worker/comm/collective_args.h"

namespace belay::comm {

namespace {

// Copies a shard onto the full buffer of a world of one (they are the same size); memmove,
// since an in-place call passes the same memory twice.
absl::Status CopyShard(std::string_view call, const void* shard, size_t shard_count, void* full,
                       size_t full_count, size_t element_size) {
  if (absl::Status s = internal::CheckSharded(call, full, full_count, shard, shard_count,
                                              element_size, /*rank=*/0, /*world_size=*/1);
      !s.ok()) {
    return s;
  }
  if (shard_count > 0) std::memmove(full, shard, shard_count * element_size);
  return absl::OkStatus();
}

}  // namespace

CommHandle SingleCommunicator::StartAllReduceSum(std::span<float> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSum", data.size()); !s.ok()) {
    return CommHandle(std::move(s));
  }
  ++stats_.all_reduce.calls;
  return CommHandle();
}

CommHandle SingleCommunicator::StartReduceScatterSum(std::span<const float> input,
                                                     std::span<float> shard) {
  // The reduce-scatter of one rank copies its input (its only shard) to the output.
  absl::Status s = CopyShard("ReduceScatterSum", input.data(), shard.size(), shard.data(),
                             input.size(), sizeof(float));
  if (s.ok()) ++stats_.reduce_scatter.calls;
  return CommHandle(std::move(s));
}

CommHandle SingleCommunicator::StartAllGather(std::span<const float> shard,
                                              std::span<float> output) {
  absl::Status s = CopyShard("AllGather", shard.data(), shard.size(), output.data(), output.size(),
                             sizeof(float));
  if (s.ok()) ++stats_.all_gather.calls;
  return CommHandle(std::move(s));
}

absl::Status SingleCommunicator::Broadcast(std::span<std::byte> /*data*/, int root) {
  if (absl::Status s = internal::CheckRoot(root, 1); !s.ok()) return s;
  ++stats_.broadcast.calls;
  return absl::OkStatus();
}

absl::Status SingleCommunicator::Barrier() {
  ++stats_.barrier.calls;
  return absl::OkStatus();
}

absl::Status SingleCommunicator::AllReduceSumInt64(std::span<int64_t> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSumInt64", data.size()); !s.ok()) {
    return s;
  }
  ++stats_.all_reduce.calls;
  return absl::OkStatus();
}

absl::Status SingleCommunicator::AllGatherInt64(std::span<const int64_t> shard,
                                                std::span<int64_t> output) {
  absl::Status s = CopyShard("AllGatherInt64", shard.data(), shard.size(), output.data(),
                             output.size(), sizeof(int64_t));
  if (s.ok()) ++stats_.all_gather.calls;
  return s;
}

absl::Status SingleCommunicator::AllGatherBytes(std::span<const std::byte> shard,
                                                std::span<std::byte> output) {
  absl::Status s =
      CopyShard("AllGatherBytes", shard.data(), shard.size(), output.data(), output.size(), 1);
  if (s.ok()) ++stats_.all_gather.calls;
  return s;
}

}  // namespace belay::comm

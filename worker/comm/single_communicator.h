// The Communicator of a one-rank job: every collective is the identity, with real copies
// where input and output are different buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "worker/comm/communicator.h"

namespace belay::comm {

// rank() 0 of world_size() 1. Checks arguments exactly as the multi-rank implementations do
// (so a size bug shows up on one rank too), completes every call at once, and counts calls
// but never bytes (nothing leaves the rank).
class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }

  CommHandle StartAllReduceSum(std::span<float> data) override;
  CommHandle StartReduceScatterSum(std::span<const float> input, std::span<float> shard) override;
  CommHandle StartAllGather(std::span<const float> shard, std::span<float> output) override;
  absl::Status Broadcast(std::span<std::byte> data, int root) override;
  absl::Status Barrier() override;
  absl::Status AllReduceSumInt64(std::span<int64_t> data) override;
  absl::Status AllGatherInt64(std::span<const int64_t> shard, std::span<int64_t> output) override;
  absl::Status AllGatherBytes(std::span<const std::byte> shard,
                              std::span<std::byte> output) override;

  CommStats bytes_sent() const override { return stats_; }
  void ResetBytesSent() override { stats_ = CommStats{}; }

 private:
  CommStats stats_;
};

}  // namespace belay::comm

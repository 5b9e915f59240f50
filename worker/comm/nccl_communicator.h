// The NCCL implementation of Communicator (GPU ranks). Code that must also build without
// CUDA uses worker/comm/nccl.h instead.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace belay::comm {

// NCCL's result as a status: Internal with NCCL's text and, given a communicator, its last
// error message.
absl::Status NcclStatus(ncclResult_t result, std::string_view call, ncclComm_t comm = nullptr);

// A Communicator over an NCCL communicator on the current CUDA device, with a stream of its
// own. Float spans are device memory, ready when the call starts; everything else is host
// memory.
//
// NCCL's own sums (ncclAllReduce, ncclReduceScatter) add in an order that depends on the
// algorithm and protocol NCCL picks for the message size and topology, so they do not meet
// Communicator's determinism contract. The fp32 sums here move data with NCCL and add on the
// device, in rank order:
//   ReduceScatterSum  grouped ncclSend/ncclRecv of the shards (an all-to-all: the same bytes
//                     as a ring reduce-scatter), then the rank-order sum into the shard.
//   AllReduceSum      the same for this rank's piece (communicator.h's split), then grouped
//                     sends of the summed piece to every rank.
//   AllGather         ncclAllGather (in place when the shard is this rank's block).
//   Broadcast, Barrier and the int64 and byte helpers stage through device memory and are
//   ncclBroadcast, ncclAllReduce (int64 sums are exact) and ncclAllGather; they block.
// Start* queues the work on the communicator's stream and returns; Wait() blocks until it is
// done, and reports an error NCCL raises meanwhile (a failed peer) instead of waiting forever.
// Scratch comes from the stream-ordered allocator and is released in stream order.
class NcclCommunicator final : public Communicator {
 public:
  // Joins the group (collective). `id` is kNcclIdBytes bytes from NewNcclId on rank 0.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(std::string_view id, int rank,
                                                                  int world_size);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  bool takes_device_memory() const override { return true; }
  // The communicator's stream waits for `event` (cudaStreamWaitEvent).
  absl::Status OrderAfter(CUevent_st* event) override;

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

  // The NCCL communicator and stream, shared with pending operations: freed when the
  // communicator and every handle it returned are gone.
  struct Shared;

 private:
  NcclCommunicator(std::shared_ptr<Shared> shared, int rank, int world_size);
  // A handle that completes when the work queued so far on the stream is done.
  CommHandle Pending(std::string_view call);
  // Queues `bytes` of host data through device scratch, runs `op` on it, copies the result
  // back and waits.
  absl::Status Staged(std::string_view call, const void* in, size_t in_bytes, void* out,
                      size_t out_bytes,
                      const std::function<ncclResult_t(const void* dev_in, void* dev_out)>& op);

  std::shared_ptr<Shared> shared_;
  int rank_;
  int world_size_;
  CommStats stats_;
};

}  // namespace belay::comm

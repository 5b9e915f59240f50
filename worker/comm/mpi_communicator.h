// The MPI implementation of Communicator (CPU ranks), and MpiSession, which owns MPI's
// initialization in this process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace belay::comm {

// MPI's lifetime in this process. Start() initializes MPI with MPI_Init_thread at
// MPI_THREAD_SERIALIZED (any thread may call MPI, one at a time — what Communicator's
// one-thread-at-a-time rule needs) and the last owner's release calls MPI_Finalize. While a
// session lives, Start() returns it again. MPI can be initialized once per process: after
// the session is gone Start() is FailedPrecondition. If someone else initialized MPI, the
// session uses it and leaves finalizing to them. Start() is thread-safe.
class MpiSession {
 public:
  static absl::StatusOr<std::shared_ptr<MpiSession>> Start();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  explicit MpiSession(bool finalize) : finalize_(finalize) {}
  bool finalize_;
};

// A Communicator over a duplicate of MPI_COMM_WORLD (so belay's traffic never matches
// anybody else's messages) whose error handler is MPI_ERRORS_RETURN: MPI failures come back
// as Internal statuses carrying MPI_Error_string's text instead of aborting the process.
//
// How each call is done (see Communicator for the guarantees):
//   ReduceScatterSum  MPI_Ialltoall of the shards, then the rank-order sum in Wait(); it
//                     holds a temporary buffer as large as the input until then.
//   AllReduceSum      MPI_Ialltoallv of the pieces, then in Wait() the rank-order sum of
//                     this rank's piece and a blocking MPI_Allgatherv of the pieces.
//   AllGather         MPI_Iallgather (MPI_IN_PLACE for an in-place call).
//   Broadcast         MPI_Bcast in pieces of at most 1 GiB.
//   int64 sums        MPI_Allreduce (exact, so the library's order does not matter).
// The MPI_Comm is freed when the communicator and every handle it returned are gone; the
// session stays alive at least that long.
class MpiCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create(
      std::shared_ptr<MpiSession> session);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

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

  // The MPI communicator and what keeps it valid; shared with pending operations.
  struct SharedComm;

 private:
  MpiCommunicator(std::shared_ptr<SharedComm> comm, int rank, int world_size);

  std::shared_ptr<SharedComm> comm_;
  int rank_;
  int world_size_;
  CommStats stats_;
};

// OK for MPI_SUCCESS; otherwise Internal "<call>: <MPI_Error_string of code>".
absl::Status MpiStatus(int code, std::string_view call);

}  // namespace belay::comm

// The collectives that distributed training needs (sum, shard, gather, broadcast), behind one
// interface with single-rank and MPI implementations (NCCL comes with the GPU trainer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include "absl/status/status.h"

struct CUevent_st;  // a CUDA event (cudaEvent_t), without the CUDA headers

namespace belay::comm {

// Calls and payload bytes of one kind of collective on one rank.
struct CollectiveTally {
  int64_t calls = 0;
  int64_t bytes = 0;
  friend bool operator==(const CollectiveTally&, const CollectiveTally&) = default;
};

// What one rank sent since its communicator was created or last reset, per kind of
// collective. The int64 and byte helpers count under the kind they perform.
//
// Bytes are a volume model, not a wire measurement: each call counts the payload that this
// rank contributes and other ranks need, once per destination rank; this rank's own share
// and data it forwards for others are not counted. With W ranks and 4-byte floats:
//   ReduceScatterSum  4·(W−1)·S            (S = shard elements)
//   AllGather         4·(W−1)·S
//   AllReduceSum      4·(n − p + (W−1)·p)  (n elements, p = this rank's piece, see below;
//                                           about 2·(W−1)/W·4n, twice a reduce-scatter)
//   Broadcast         (W−1)·n bytes on the root, 0 elsewhere
//   Barrier           0 bytes (calls only)
// This is what a ring (bandwidth-optimal) algorithm sends, and what the fp32 sums here send
// in their exchange phase; the library may route gathers and broadcasts through trees that
// forward other ranks' data. Summed over ranks it is the job's payload volume, which is what
// comparing ZeRO stages needs. A single rank always counts 0 bytes. A call rejected for its
// arguments counts nothing; a non-blocking one counts when it starts.
struct CommStats {
  CollectiveTally all_reduce;
  CollectiveTally reduce_scatter;
  CollectiveTally all_gather;
  CollectiveTally broadcast;
  CollectiveTally barrier;

  int64_t total_bytes() const {
    return all_reduce.bytes + reduce_scatter.bytes + all_gather.bytes + broadcast.bytes +
           barrier.bytes;
  }
  friend bool operator==(const CommStats&, const CommStats&) = default;
};

// A collective in flight. Wait() completes it: the first call blocks until the operation is
// done and returns its status; later calls return the same status at once. A handle that is
// destroyed while still pending waits in its destructor (its status is then lost), so buffers
// are never written after their handle is gone. Until Wait() returns, the caller must neither
// touch the buffers it passed nor let them go. A default-constructed handle is done and OK.
// Movable, not copyable.
class [[nodiscard]] CommHandle {
 public:
  // The part of a pending collective an implementation provides.
  class Operation {
   public:
    virtual ~Operation() = default;
    // Called once; blocks until the collective is done.
    virtual absl::Status Wait() = 0;
  };

  CommHandle() = default;
  // A handle that is already done with `status` (how argument errors are reported).
  explicit CommHandle(absl::Status status) : status_(std::move(status)) {}
  explicit CommHandle(std::unique_ptr<Operation> pending) : pending_(std::move(pending)) {}
  CommHandle(CommHandle&& other) noexcept = default;
  CommHandle& operator=(CommHandle&& other) noexcept;
  ~CommHandle();

  absl::Status Wait();
  bool pending() const { return pending_ != nullptr; }

 private:
  std::unique_ptr<Operation> pending_;
  absl::Status status_;
};

// One rank's view of a group of W = world_size() ranks.
//
// Contract for every collective: all ranks of the group make the same sequence of calls —
// starts and waits (including handle destructions) — with the same sizes and roots. Breaking
// it is undefined: a real backend may hang or mix up data. Argument errors are checked
// locally (every rank that makes the same bad call gets the same InvalidArgument, and no data
// moves); failures of the transport come back as other codes, typically Internal.
//
// Determinism: for a fixed world size the fp32 sums are bit-identical from run to run and on
// every rank, whatever the library, network or timing. Element i of a sum is computed by
// exactly one rank as
//     ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{W−1}[i]        (fp32, rank order)
// and then copied to the ranks that need it; AllReduceSum and ReduceScatterSum give the same
// bits for the same element. (MPI_Allreduce and MPI_Reduce_scatter are not used for floats:
// their reduction order is implementation-defined and may change with message size, process
// placement or algorithm selection.) A different world size adds in a different grouping
// and so may give different bits. AllGather and Broadcast move bits without arithmetic; the
// int64 sums are exact (integer addition is associative; overflow is the caller's to avoid).
//
// Uneven sizes: AllReduceSum takes any element count n. It splits the buffer into W pieces
// in rank order, the first n mod W ranks owning floor(n/W) + 1 elements and the others
// floor(n/W) (that is p above); each rank sums its piece and then the pieces are gathered.
// ReduceScatterSum and AllGather take equal shards: pad the buffer to a multiple of W (ZeRO
// does; see docs/distributed.md).
//
// Sizes: one call moves at most 2^31 − 1 elements (of a float buffer in AllReduceSum; of a
// shard in ReduceScatterSum and AllGather); larger calls are InvalidArgument — split them.
//
// Threads: not thread-safe. One thread at a time may use a communicator and its handles.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Whether the float collectives take device (GPU) memory rather than host memory.
  virtual bool takes_device_memory() const { return false; }
  // Device memory only: the float collectives started after this call begin once `event` has
  // completed (a CUDA event recorded on the stream that writes their input), ordered on the
  // device, so the host need not wait for that stream first. FailedPrecondition for backends
  // that take host memory.
  virtual absl::Status OrderAfter(CUevent_st* event);

  // --- fp32, non-blocking: start now, complete with Wait(). Argument errors come back from
  // Wait(). How much overlaps depends on the backend: the MPI one exchanges data in the
  // background only while MPI makes progress (other MPI calls, or Wait).

  // Sums `data` element-wise over all ranks, in place; every rank gets the sum. The MPI
  // backend runs the exchange in the background and the gather of the summed pieces in Wait().
  virtual CommHandle StartAllReduceSum(std::span<float> data) = 0;
  // `input` holds W shards of shard.size() elements each; shard r of the sum over all ranks
  // goes to rank r's `shard`. `shard` may be this rank's block of `input` (in place); any
  // other overlap is InvalidArgument.
  virtual CommHandle StartReduceScatterSum(std::span<const float> input,
                                           std::span<float> shard) = 0;
  // Concatenates every rank's `shard` in rank order into `output` (W · shard.size()
  // elements). `shard` may be this rank's block of `output` (in place); any other overlap is
  // InvalidArgument.
  virtual CommHandle StartAllGather(std::span<const float> shard, std::span<float> output) = 0;

  // --- Blocking forms of the above.
  absl::Status AllReduceSum(std::span<float> data) { return StartAllReduceSum(data).Wait(); }
  absl::Status ReduceScatterSum(std::span<const float> input, std::span<float> shard) {
    return StartReduceScatterSum(input, shard).Wait();
  }
  absl::Status AllGather(std::span<const float> shard, std::span<float> output) {
    return StartAllGather(shard, output).Wait();
  }

  // Copies `root`'s bytes into `data` on every rank (any size; large buffers go in pieces).
  virtual absl::Status Broadcast(std::span<std::byte> data, int root) = 0;
  // Returns once every rank has entered it.
  virtual absl::Status Barrier() = 0;

  // --- Helpers for counts and small metadata.
  // Exact element-wise sum of int64 values over all ranks, in place.
  virtual absl::Status AllReduceSumInt64(std::span<int64_t> data) = 0;
  // Like AllGather (in place allowed too), for int64 values and for raw bytes.
  virtual absl::Status AllGatherInt64(std::span<const int64_t> shard,
                                      std::span<int64_t> output) = 0;
  virtual absl::Status AllGatherBytes(std::span<const std::byte> shard,
                                      std::span<std::byte> output) = 0;

  // Payload sent by this rank since creation or the last ResetBytesSent (see CommStats).
  virtual CommStats bytes_sent() const = 0;
  virtual void ResetBytesSent() = 0;
};

}  // namespace belay::comm

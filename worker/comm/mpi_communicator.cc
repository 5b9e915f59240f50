// MpiCommunicator: the collectives over MPI, with fp32 sums done in rank order on this side of
// the library so that they are deterministic (communicator.h).
#include "worker/comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "worker/comm/collective_args.h"

namespace belay::comm {

absl::Status MpiStatus(int code, std::string_view call) {
  if (code == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return absl::InternalError(Cat(call, ": MPI error code ", code));
  }
  return absl::InternalError(Cat(call, ": ", std::string_view(text, static_cast<size_t>(length))));
}

// ---------------------------------------------------------------------------------------------
// MpiSession

namespace {

std::mutex session_mutex;
std::weak_ptr<MpiSession> live_session;  // guarded by session_mutex

}  // namespace

absl::StatusOr<std::shared_ptr<MpiSession>> MpiSession::Start() {
  std::lock_guard<std::mutex> lock(session_mutex);
  if (std::shared_ptr<MpiSession> session = live_session.lock()) return session;
  int finalized = 0;
  if (absl::Status s = MpiStatus(MPI_Finalized(&finalized), "MPI_Finalized"); !s.ok()) return s;
  if (finalized) {
    return absl::FailedPreconditionError(
        "MPI was already finalized; it can be initialized only once per process");
  }
  int initialized = 0;
  if (absl::Status s = MpiStatus(MPI_Initialized(&initialized), "MPI_Initialized"); !s.ok()) {
    return s;
  }
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    if (absl::Status s = MpiStatus(MPI_Query_thread(&provided), "MPI_Query_thread"); !s.ok()) {
      return s;
    }
  } else if (absl::Status s =
                 MpiStatus(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
                           "MPI_Init_thread");
             !s.ok()) {
    return s;
  }
  // Constructed before the thread-level check, so that MPI we initialized is finalized.
  std::shared_ptr<MpiSession> session(new MpiSession(/*finalize=*/!initialized));
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(Cat("MPI provides thread level ", provided,
                                             ", belay needs MPI_THREAD_SERIALIZED (",
                                             MPI_THREAD_SERIALIZED, ")"));
  }
  live_session = session;
  return session;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  if (finalize_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
}

// ---------------------------------------------------------------------------------------------
// MpiCommunicator

struct MpiCommunicator::SharedComm {
  MPI_Comm comm = MPI_COMM_NULL;
  std::shared_ptr<MpiSession> session;

  ~SharedComm() {
    int finalized = 0;
    if (comm != MPI_COMM_NULL && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
      MPI_Comm_free(&comm);
    }
  }
};

namespace {

using SharedComm = MpiCommunicator::SharedComm;

// A collective whose only work left is the MPI request.
class RequestOperation final : public CommHandle::Operation {
 public:
  RequestOperation(std::shared_ptr<SharedComm> comm, std::string_view call)
      : comm_(std::move(comm)), call_(call) {}
  MPI_Request* request() { return &request_; }
  absl::Status Wait() override { return MpiStatus(MPI_Wait(&request_, MPI_STATUS_IGNORE), call_); }

 private:
  std::shared_ptr<SharedComm> comm_;  // keeps the MPI_Comm alive while the request is
  std::string_view call_;             // a literal
  MPI_Request request_ = MPI_REQUEST_NULL;
};

// Reduce-scatter: every rank's shards have been exchanged into `received` (W blocks, one per
// sending rank, in rank order); Wait() sums them into `shard`.
class ReduceScatterOperation final : public CommHandle::Operation {
 public:
  ReduceScatterOperation(std::shared_ptr<SharedComm> comm, std::span<float> shard, int world)
      : comm_(std::move(comm)),
        shard_(shard),
        world_(world),
        received_(shard.size() * static_cast<size_t>(world)) {}
  float* received() { return received_.data(); }
  MPI_Request* request() { return &request_; }

  absl::Status Wait() override {
    if (absl::Status s = MpiStatus(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Ialltoall");
        !s.ok()) {
      return s;
    }
    internal::SumInRankOrder(received_, static_cast<size_t>(world_), shard_);
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<SharedComm> comm_;
  std::span<float> shard_;
  int world_;
  std::vector<float> received_;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

// All-reduce: pieces exchanged by MPI_Ialltoallv into `received`; Wait() sums this rank's
// piece in place and gathers all summed pieces. The count and displacement arrays must live
// until the requests complete (MPI reads them meanwhile), hence members.
class AllReduceOperation final : public CommHandle::Operation {
 public:
  AllReduceOperation(std::shared_ptr<SharedComm> comm, std::span<float> data, int rank, int world)
      : comm_(std::move(comm)), data_(data), rank_(rank), world_(world) {
    const size_t w = static_cast<size_t>(world);
    piece_counts_.resize(w);
    piece_starts_.resize(w);
    for (int r = 0; r < world; ++r) {
      const internal::Piece piece = internal::PieceOf(data.size(), r, world);
      piece_counts_[static_cast<size_t>(r)] = static_cast<int>(piece.size);
      piece_starts_[static_cast<size_t>(r)] = static_cast<int>(piece.start);
    }
    const int mine = piece_counts_[static_cast<size_t>(rank)];
    received_.resize(static_cast<size_t>(mine) * w);
    receive_counts_.assign(w, mine);
    receive_starts_.resize(w);
    for (size_t r = 0; r < w; ++r) receive_starts_[r] = static_cast<int>(r) * mine;
  }

  absl::Status Start() {
    return MpiStatus(MPI_Ialltoallv(data_.data(), piece_counts_.data(), piece_starts_.data(),
                                    MPI_FLOAT, received_.data(), receive_counts_.data(),
                                    receive_starts_.data(), MPI_FLOAT, comm_->comm, &request_),
                     "MPI_Ialltoallv");
  }

  absl::Status Wait() override {
    if (absl::Status s = MpiStatus(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Ialltoallv");
        !s.ok()) {
      return s;
    }
    const size_t r = static_cast<size_t>(rank_);
    internal::SumInRankOrder(received_, static_cast<size_t>(world_),
                             data_.subspan(static_cast<size_t>(piece_starts_[r]),
                                           static_cast<size_t>(piece_counts_[r])));
    return MpiStatus(
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data_.data(), piece_counts_.data(),
                       piece_starts_.data(), MPI_FLOAT, comm_->comm),
        "MPI_Allgatherv");
  }

 private:
  std::shared_ptr<SharedComm> comm_;
  std::span<float> data_;
  int rank_;
  int world_;
  std::vector<int> piece_counts_, piece_starts_;      // send side, and the gather's layout
  std::vector<int> receive_counts_, receive_starts_;  // one block per sending rank
  std::vector<float> received_;
  MPI_Request request_ = MPI_REQUEST_NULL;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(
    std::shared_ptr<MpiSession> session) {
  if (session == nullptr) return absl::InvalidArgumentError("MpiCommunicator needs a session");
  auto shared = std::make_shared<SharedComm>();
  shared->session = std::move(session);
  if (absl::Status s = MpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &shared->comm), "MPI_Comm_dup");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = MpiStatus(MPI_Comm_set_errhandler(shared->comm, MPI_ERRORS_RETURN),
                                 "MPI_Comm_set_errhandler");
      !s.ok()) {
    return s;
  }
  int rank = 0;
  int size = 0;
  if (absl::Status s = MpiStatus(MPI_Comm_rank(shared->comm, &rank), "MPI_Comm_rank"); !s.ok()) {
    return s;
  }
  if (absl::Status s = MpiStatus(MPI_Comm_size(shared->comm, &size), "MPI_Comm_size"); !s.ok()) {
    return s;
  }
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(std::move(shared), rank, size));
}

MpiCommunicator::MpiCommunicator(std::shared_ptr<SharedComm> comm, int rank, int world_size)
    : comm_(std::move(comm)), rank_(rank), world_size_(world_size) {}

MpiCommunicator::~MpiCommunicator() = default;

CommHandle MpiCommunicator::StartAllReduceSum(std::span<float> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSum", data.size()); !s.ok()) {
    return CommHandle(std::move(s));
  }
  auto op = std::make_unique<AllReduceOperation>(comm_, data, rank_, world_size_);
  if (absl::Status s = op->Start(); !s.ok()) return CommHandle(std::move(s));
  ++stats_.all_reduce.calls;
  stats_.all_reduce.bytes +=
      internal::AllReduceBytes(data.size(), sizeof(float), rank_, world_size_);
  return CommHandle(std::move(op));
}

CommHandle MpiCommunicator::StartReduceScatterSum(std::span<const float> input,
                                                  std::span<float> shard) {
  if (absl::Status s =
          internal::CheckSharded("ReduceScatterSum", input.data(), input.size(), shard.data(),
                                 shard.size(), sizeof(float), rank_, world_size_);
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  // The exchange only reads `input` and the sum writes `shard` after it, so an in-place call
  // needs nothing special.
  auto op = std::make_unique<ReduceScatterOperation>(comm_, shard, world_size_);
  const int count = static_cast<int>(shard.size());
  if (absl::Status s = MpiStatus(MPI_Ialltoall(input.data(), count, MPI_FLOAT, op->received(),
                                               count, MPI_FLOAT, comm_->comm, op->request()),
                                 "MPI_Ialltoall");
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  ++stats_.reduce_scatter.calls;
  stats_.reduce_scatter.bytes += internal::ShardedBytes(shard.size(), sizeof(float), world_size_);
  return CommHandle(std::move(op));
}

CommHandle MpiCommunicator::StartAllGather(std::span<const float> shard, std::span<float> output) {
  if (absl::Status s =
          internal::CheckSharded("AllGather", output.data(), output.size(), shard.data(),
                                 shard.size(), sizeof(float), rank_, world_size_);
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  const bool in_place =
      internal::IsOwnBlock(output.data(), shard.data(), shard.size(), sizeof(float), rank_);
  auto op = std::make_unique<RequestOperation>(comm_, "MPI_Iallgather");
  const int count = static_cast<int>(shard.size());
  if (absl::Status s =
          MpiStatus(MPI_Iallgather(in_place ? MPI_IN_PLACE : shard.data(), count, MPI_FLOAT,
                                   output.data(), count, MPI_FLOAT, comm_->comm, op->request()),
                    "MPI_Iallgather");
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  ++stats_.all_gather.calls;
  stats_.all_gather.bytes += internal::ShardedBytes(shard.size(), sizeof(float), world_size_);
  return CommHandle(std::move(op));
}

absl::Status MpiCommunicator::Broadcast(std::span<std::byte> data, int root) {
  if (absl::Status s = internal::CheckRoot(root, world_size_); !s.ok()) return s;
  constexpr size_t kPiece = size_t{1} << 30;
  for (size_t start = 0; start < data.size(); start += kPiece) {
    const size_t size = std::min(kPiece, data.size() - start);
    if (absl::Status s = MpiStatus(
            MPI_Bcast(data.data() + start, static_cast<int>(size), MPI_BYTE, root, comm_->comm),
            "MPI_Bcast");
        !s.ok()) {
      return s;
    }
  }
  ++stats_.broadcast.calls;
  if (rank_ == root) {
    stats_.broadcast.bytes += static_cast<int64_t>(data.size()) * (world_size_ - 1);
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::Barrier() {
  if (absl::Status s = MpiStatus(MPI_Barrier(comm_->comm), "MPI_Barrier"); !s.ok()) return s;
  ++stats_.barrier.calls;
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllReduceSumInt64(std::span<int64_t> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSumInt64", data.size()); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          MpiStatus(MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()),
                                  MPI_INT64_T, MPI_SUM, comm_->comm),
                    "MPI_Allreduce");
      !s.ok()) {
    return s;
  }
  ++stats_.all_reduce.calls;
  stats_.all_reduce.bytes +=
      internal::AllReduceBytes(data.size(), sizeof(int64_t), rank_, world_size_);
  return absl::OkStatus();
}

namespace {

// A blocking MPI_Allgather of `count` elements of `type` per rank, in place when `shard` is
// this rank's block of `output`.
absl::Status GatherBlocks(std::string_view call, const void* shard, size_t shard_count,
                          void* output, size_t output_count, size_t element_size, MPI_Datatype type,
                          int rank, int world_size, MPI_Comm comm) {
  if (absl::Status s = internal::CheckSharded(call, output, output_count, shard, shard_count,
                                              element_size, rank, world_size);
      !s.ok()) {
    return s;
  }
  const bool in_place = internal::IsOwnBlock(output, shard, shard_count, element_size, rank);
  const int count = static_cast<int>(shard_count);
  return MpiStatus(
      MPI_Allgather(in_place ? MPI_IN_PLACE : shard, count, type, output, count, type, comm),
      "MPI_Allgather");
}

}  // namespace

absl::Status MpiCommunicator::AllGatherInt64(std::span<const int64_t> shard,
                                             std::span<int64_t> output) {
  if (absl::Status s =
          GatherBlocks("AllGatherInt64", shard.data(), shard.size(), output.data(), output.size(),
                       sizeof(int64_t), MPI_INT64_T, rank_, world_size_, comm_->comm);
      !s.ok()) {
    return s;
  }
  ++stats_.all_gather.calls;
  stats_.all_gather.bytes += internal::ShardedBytes(shard.size(), sizeof(int64_t), world_size_);
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllGatherBytes(std::span<const std::byte> shard,
                                             std::span<std::byte> output) {
  if (absl::Status s = GatherBlocks("AllGatherBytes", shard.data(), shard.size(), output.data(),
                                    output.size(), 1, MPI_BYTE, rank_, world_size_, comm_->comm);
      !s.ok()) {
    return s;
  }
  ++stats_.all_gather.calls;
  stats_.all_gather.bytes += internal::ShardedBytes(shard.size(), 1, world_size_);
  return absl::OkStatus();
}

}  // namespace belay::comm

// NcclCommunicator: NCCL moves the data, the rank-order sums run on the device.
#include "worker/comm/nccl_communicator.h"

#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "common/strings.h"
#include "kernels/cuda/check.h"
#include "worker/comm/collective_args.h"
#include "worker/comm/nccl.h"
#include "worker/comm/nccl_sum.h"

namespace belay::comm {

absl::Status NcclStatus(ncclResult_t result, std::string_view call, ncclComm_t comm) {
  if (result == ncclSuccess) return absl::OkStatus();
  std::string text = ncclGetErrorString(result);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') text = Cat(text, ": ", last);
  }
  return absl::InternalError(Cat(call, ": ", text));
}

struct NcclCommunicator::Shared {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  bool failed = false;  // NCCL reported an asynchronous error: abort instead of destroy

  ~Shared() {
    if (stream != nullptr && !failed) cudaStreamSynchronize(stream);
    if (comm != nullptr) {
      if (failed) {
        ncclCommAbort(comm);
      } else {
        ncclCommDestroy(comm);
      }
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

namespace {

#define BELAY_NCCL_RETURN_IF_ERROR(call, comm)                             \
  do {                                                                     \
    ::absl::Status belay_nccl_status_ = NcclStatus((call), #call, (comm)); \
    if (!belay_nccl_status_.ok()) return belay_nccl_status_;               \
  } while (0)

// Blocks until `event` has happened; an asynchronous NCCL error (a peer that failed or left)
// ends the wait with that error.
absl::Status WaitForEvent(NcclCommunicator::Shared& shared, cudaEvent_t event,
                          std::string_view call) {
  auto sleep = std::chrono::microseconds(2);
  for (;;) {
    const cudaError_t e = cudaEventQuery(event);
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) {
      return kernels::CudaStatus(e, Cat(call, ": cudaEventQuery").c_str(), __FILE__, __LINE__);
    }
    ncclResult_t async = ncclSuccess;
    if (absl::Status s =
            NcclStatus(ncclCommGetAsyncError(shared.comm, &async), "ncclCommGetAsyncError");
        !s.ok()) {
      return s;
    }
    if (async != ncclSuccess && async != ncclInProgress) {
      shared.failed = true;
      return NcclStatus(async, call, shared.comm);
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(200));
  }
}

// The work queued on the shared stream up to an event.
class NcclOperation final : public CommHandle::Operation {
 public:
  NcclOperation(std::shared_ptr<NcclCommunicator::Shared> shared, cudaEvent_t event,
                std::string call)
      : shared_(std::move(shared)), event_(event), call_(std::move(call)) {}
  ~NcclOperation() override { cudaEventDestroy(event_); }
  absl::Status Wait() override { return WaitForEvent(*shared_, event_, call_); }

 private:
  std::shared_ptr<NcclCommunicator::Shared> shared_;
  cudaEvent_t event_;
  std::string call_;
};

// Device scratch from the stream-ordered pool, released in stream order.
class Scratch {
 public:
  Scratch(cudaStream_t stream) : stream_(stream) {}
  ~Scratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  absl::Status Allocate(size_t bytes) {
    BELAY_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&ptr_, bytes == 0 ? 1 : bytes, stream_));
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

}  // namespace

bool NcclBuilt() { return true; }

absl::StatusOr<std::string> NewNcclId() {
  ncclUniqueId id;
  BELAY_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id), nullptr);
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(std::string_view id, int rank,
                                                                     int world_size) {
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> c =
      NcclCommunicator::Create(id, rank, world_size);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Communicator>(std::move(*c));
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(std::string_view id,
                                                                           int rank,
                                                                           int world_size) {
  static_assert(sizeof(ncclUniqueId) == kNcclIdBytes);
  if (id.size() != kNcclIdBytes) {
    return absl::InvalidArgumentError(Cat("NCCL id of ", id.size(), " bytes; want ", kNcclIdBytes));
  }
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(Cat("rank ", rank, " of ", world_size, " ranks"));
  }
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), kNcclIdBytes);
  auto shared = std::make_shared<Shared>();
  BELAY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&shared->stream, cudaStreamNonBlocking));
  BELAY_NCCL_RETURN_IF_ERROR(ncclCommInitRank(&shared->comm, world_size, uid, rank), nullptr);
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(std::move(shared), rank, world_size));
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<Shared> shared, int rank, int world_size)
    : shared_(std::move(shared)), rank_(rank), world_size_(world_size) {}

NcclCommunicator::~NcclCommunicator() = default;

CommHandle NcclCommunicator::Pending(std::string_view call) {
  cudaEvent_t event = nullptr;
  absl::Status s = kernels::CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                                       "cudaEventCreateWithFlags", __FILE__, __LINE__);
  if (s.ok()) {
    s = kernels::CudaStatus(cudaEventRecord(event, shared_->stream), "cudaEventRecord", __FILE__,
                            __LINE__);
  }
  if (!s.ok()) {
    if (event != nullptr) cudaEventDestroy(event);
    // Without an event, wait for the stream itself.
    absl::Status synced = kernels::CudaStatus(cudaStreamSynchronize(shared_->stream),
                                              "cudaStreamSynchronize", __FILE__, __LINE__);
    return CommHandle(synced.ok() ? s : synced);
  }
  return CommHandle(std::make_unique<NcclOperation>(shared_, event, std::string(call)));
}

absl::Status NcclCommunicator::OrderAfter(CUevent_st* event) {
  if (event == nullptr) return absl::InvalidArgumentError("OrderAfter: no event");
  BELAY_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(shared_->stream, event, 0));
  return absl::OkStatus();
}

CommHandle NcclCommunicator::StartReduceScatterSum(std::span<const float> input,
                                                   std::span<float> shard) {
  if (absl::Status s =
          internal::CheckSharded("ReduceScatterSum", input.data(), input.size(), shard.data(),
                                 shard.size(), sizeof(float), rank_, world_size_);
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  const size_t S = shard.size();
  cudaStream_t stream = shared_->stream;
  ncclComm_t comm = shared_->comm;
  auto queue = [&]() -> absl::Status {
    if (S == 0) return absl::OkStatus();
    Scratch received(stream);
    BELAY_RETURN_IF_NOT_OK(received.Allocate(static_cast<size_t>(world_size_) * S * sizeof(float)));
    float* tmp = received.as<float>();
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        tmp + static_cast<size_t>(rank_) * S, input.data() + static_cast<size_t>(rank_) * S,
        S * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupStart(), comm);
    for (int q = 0; q < world_size_; ++q) {
      if (q == rank_) continue;
      const size_t at = static_cast<size_t>(q) * S;
      BELAY_NCCL_RETURN_IF_ERROR(ncclSend(input.data() + at, S, ncclFloat, q, comm, stream), comm);
      BELAY_NCCL_RETURN_IF_ERROR(ncclRecv(tmp + at, S, ncclFloat, q, comm, stream), comm);
    }
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupEnd(), comm);
    return internal::SumInRankOrderOnDevice(tmp, world_size_, S, shard.data(), stream);
  };
  if (absl::Status s = queue(); !s.ok()) return CommHandle(std::move(s));
  stats_.reduce_scatter.calls++;
  stats_.reduce_scatter.bytes += internal::ShardedBytes(S, sizeof(float), world_size_);
  return Pending("ReduceScatterSum");
}

CommHandle NcclCommunicator::StartAllReduceSum(std::span<float> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSum", data.size()); !s.ok())
    return CommHandle(std::move(s));
  const size_t n = data.size();
  const internal::Piece mine = internal::PieceOf(n, rank_, world_size_);
  cudaStream_t stream = shared_->stream;
  ncclComm_t comm = shared_->comm;
  auto queue = [&]() -> absl::Status {
    if (n == 0 || world_size_ == 1) return absl::OkStatus();
    Scratch received(stream);
    BELAY_RETURN_IF_NOT_OK(
        received.Allocate(static_cast<size_t>(world_size_) * mine.size * sizeof(float)));
    float* tmp = received.as<float>();
    float* own = data.data() + mine.start;
    if (mine.size > 0) {
      BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tmp + static_cast<size_t>(rank_) * mine.size, own,
                                                 mine.size * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, stream));
    }
    // Every rank's contribution to this rank's piece; this rank's to every other piece.
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupStart(), comm);
    for (int q = 0; q < world_size_; ++q) {
      if (q == rank_) continue;
      const internal::Piece theirs = internal::PieceOf(n, q, world_size_);
      if (theirs.size > 0) {
        BELAY_NCCL_RETURN_IF_ERROR(
            ncclSend(data.data() + theirs.start, theirs.size, ncclFloat, q, comm, stream), comm);
      }
      if (mine.size > 0) {
        BELAY_NCCL_RETURN_IF_ERROR(ncclRecv(tmp + static_cast<size_t>(q) * mine.size, mine.size,
                                            ncclFloat, q, comm, stream),
                                   comm);
      }
    }
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupEnd(), comm);
    BELAY_RETURN_IF_NOT_OK(
        internal::SumInRankOrderOnDevice(tmp, world_size_, mine.size, own, stream));
    // The summed pieces to everyone.
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupStart(), comm);
    for (int q = 0; q < world_size_; ++q) {
      if (q == rank_) continue;
      const internal::Piece theirs = internal::PieceOf(n, q, world_size_);
      if (mine.size > 0)
        BELAY_NCCL_RETURN_IF_ERROR(ncclSend(own, mine.size, ncclFloat, q, comm, stream), comm);
      if (theirs.size > 0) {
        BELAY_NCCL_RETURN_IF_ERROR(
            ncclRecv(data.data() + theirs.start, theirs.size, ncclFloat, q, comm, stream), comm);
      }
    }
    BELAY_NCCL_RETURN_IF_ERROR(ncclGroupEnd(), comm);
    return absl::OkStatus();
  };
  if (absl::Status s = queue(); !s.ok()) return CommHandle(std::move(s));
  stats_.all_reduce.calls++;
  stats_.all_reduce.bytes += internal::AllReduceBytes(n, sizeof(float), rank_, world_size_);
  return Pending("AllReduceSum");
}

CommHandle NcclCommunicator::StartAllGather(std::span<const float> shard, std::span<float> output) {
  if (absl::Status s =
          internal::CheckSharded("AllGather", output.data(), output.size(), shard.data(),
                                 shard.size(), sizeof(float), rank_, world_size_);
      !s.ok()) {
    return CommHandle(std::move(s));
  }
  if (!shard.empty()) {
    if (absl::Status s = NcclStatus(ncclAllGather(shard.data(), output.data(), shard.size(),
                                                  ncclFloat, shared_->comm, shared_->stream),
                                    "ncclAllGather", shared_->comm);
        !s.ok()) {
      return CommHandle(std::move(s));
    }
  }
  stats_.all_gather.calls++;
  stats_.all_gather.bytes += internal::ShardedBytes(shard.size(), sizeof(float), world_size_);
  return Pending("AllGather");
}

absl::Status NcclCommunicator::Staged(std::string_view call, const void* in, size_t in_bytes,
                                      void* out, size_t out_bytes,
                                      const std::function<ncclResult_t(const void*, void*)>& op) {
  cudaStream_t stream = shared_->stream;
  {
    Scratch scratch(stream);
    BELAY_RETURN_IF_NOT_OK(scratch.Allocate(in_bytes + out_bytes));
    std::byte* dev_in = scratch.as<std::byte>();
    std::byte* dev_out = dev_in + in_bytes;
    if (in_bytes > 0) {
      BELAY_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dev_in, in, in_bytes, cudaMemcpyHostToDevice, stream));
    }
    BELAY_RETURN_IF_NOT_OK(NcclStatus(op(dev_in, dev_out), call, shared_->comm));
    if (out_bytes > 0) {
      BELAY_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(out, dev_out, out_bytes, cudaMemcpyDeviceToHost, stream));
    }
  }
  return Pending(call).Wait();
}

absl::Status NcclCommunicator::Broadcast(std::span<std::byte> data, int root) {
  if (absl::Status s = internal::CheckRoot(root, world_size_); !s.ok()) return s;
  if (!data.empty()) {
    ncclComm_t comm = shared_->comm;
    cudaStream_t stream = shared_->stream;
    BELAY_RETURN_IF_NOT_OK(Staged("ncclBroadcast", data.data(), data.size(), data.data(),
                                  data.size(), [&](const void* in, void* out) {
                                    return ncclBroadcast(in, out, data.size(), ncclUint8, root,
                                                         comm, stream);
                                  }));
  }
  stats_.broadcast.calls++;
  if (rank_ == root)
    stats_.broadcast.bytes +=
        static_cast<int64_t>(static_cast<size_t>(world_size_ - 1) * data.size());
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Barrier() {
  int32_t one = 1, all = 0;
  ncclComm_t comm = shared_->comm;
  cudaStream_t stream = shared_->stream;
  BELAY_RETURN_IF_NOT_OK(Staged("ncclAllReduce (barrier)", &one, sizeof(one), &all, sizeof(all),
                                [&](const void* in, void* out) {
                                  return ncclAllReduce(in, out, 1, ncclInt32, ncclSum, comm,
                                                       stream);
                                }));
  if (all != world_size_) {
    return absl::InternalError(Cat("barrier: ", all, " ranks arrived, want ", world_size_));
  }
  stats_.barrier.calls++;
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSumInt64(std::span<int64_t> data) {
  if (absl::Status s = internal::CheckCount("AllReduceSumInt64", data.size()); !s.ok()) return s;
  if (!data.empty()) {
    ncclComm_t comm = shared_->comm;
    cudaStream_t stream = shared_->stream;
    const size_t bytes = data.size_bytes();
    BELAY_RETURN_IF_NOT_OK(Staged(
        "ncclAllReduce", data.data(), bytes, data.data(), bytes, [&](const void* in, void* out) {
          return ncclAllReduce(in, out, data.size(), ncclInt64, ncclSum, comm, stream);
        }));
  }
  stats_.all_reduce.calls++;
  stats_.all_reduce.bytes +=
      internal::AllReduceBytes(data.size(), sizeof(int64_t), rank_, world_size_);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGatherInt64(std::span<const int64_t> shard,
                                              std::span<int64_t> output) {
  if (absl::Status s =
          internal::CheckSharded("AllGatherInt64", output.data(), output.size(), shard.data(),
                                 shard.size(), sizeof(int64_t), rank_, world_size_);
      !s.ok()) {
    return s;
  }
  return AllGatherBytes(std::as_bytes(shard), std::as_writable_bytes(output));
}

absl::Status NcclCommunicator::AllGatherBytes(std::span<const std::byte> shard,
                                              std::span<std::byte> output) {
  if (absl::Status s = internal::CheckSharded("AllGatherBytes", output.data(), output.size(),
                                              shard.data(), shard.size(), 1, rank_, world_size_);
      !s.ok()) {
    return s;
  }
  if (!shard.empty()) {
    ncclComm_t comm = shared_->comm;
    cudaStream_t stream = shared_->stream;
    BELAY_RETURN_IF_NOT_OK(Staged("ncclAllGather", shard.data(), shard.size(), output.data(),
                                  output.size(), [&](const void* in, void* out) {
                                    return ncclAllGather(in, out, shard.size(), ncclUint8, comm,
                                                         stream);
                                  }));
  }
  stats_.all_gather.calls++;
  stats_.all_gather.bytes += internal::ShardedBytes(shard.size(), 1, world_size_);
  return absl::OkStatus();
}

}  // namespace belay::comm

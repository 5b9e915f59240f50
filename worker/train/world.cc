// Joining a training job: the rank's GPU, and MPI or NCCL between the ranks.
#include "worker/train/world.h"

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "common/strings.h"
#include "kernels/device.h"
#include "spdlog/spdlog.h"
#include "worker/comm/nccl.h"
#include "worker/comm/single_communicator.h"

namespace belay::train {
namespace {

absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> JoinMpi(const runtime::RankInfo& info,
                                                               World& w) {
  absl::StatusOr<std::shared_ptr<comm::MpiSession>> session = comm::MpiSession::Start();
  if (!session.ok()) return session.status();
  w.session = *session;
  absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi =
      comm::MpiCommunicator::Create(w.session);
  if (!mpi.ok()) return mpi.status();
  if ((*mpi)->rank() != info.rank || (*mpi)->world_size() != info.world_size) {
    return absl::FailedPreconditionError(
        Cat("MPI says rank ", (*mpi)->rank(), " of ", (*mpi)->world_size(), ", the launcher's ",
            runtime::RankSourceName(info.source), " variables say rank ", info.rank, " of ",
            info.world_size));
  }
  return mpi;
}

// This rank's GPU, by its local rank (runtime::ChooseCudaDevice).
absl::Status UseRankGpu(const runtime::RankInfo& info) {
  absl::StatusOr<std::vector<kernels::CudaDevice>> devices = kernels::ListCudaDevices();
  if (!devices.ok()) {
    return absl::FailedPreconditionError(
        Cat("asked to train on a GPU: ", devices.status().message()));
  }
  absl::StatusOr<int> index = runtime::ChooseCudaDevice(info, static_cast<int>(devices->size()));
  if (!index.ok()) return index.status();
  if (absl::Status s = kernels::UseCudaDevice(*index); !s.ok()) return s;
  const kernels::CudaDevice& d = (*devices)[static_cast<size_t>(*index)];
  spdlog::info("rank {} (local rank {}) on GPU {} of {}: {}, {:.0f} GiB", info.rank,
               info.local_rank, *index, devices->size(), d.name,
               static_cast<double>(d.memory_bytes) / (1 << 30));
  return absl::OkStatus();
}

// GPU ranks: NCCL (also for one rank: the trainer's collectives then take device memory),
// whose id rank 0 makes and hands to the others over mpirun's MPI or belayd's rendezvous.
absl::Status JoinNccl(const runtime::RankInfo& info, runtime::CoordinatorClient* link, World& w) {
  std::string id;
  if (info.rank == 0) {
    absl::StatusOr<std::string> made = comm::NewNcclId();
    if (!made.ok()) return made.status();
    id = std::move(*made);
  }
  if (info.world_size > 1 && info.source == runtime::RankSource::kMpirun) {
    absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi = JoinMpi(info, w);
    if (!mpi.ok()) return mpi.status();
    id.resize(comm::kNcclIdBytes);
    if (absl::Status s =
            (*mpi)->Broadcast(std::as_writable_bytes(std::span(id.data(), id.size())), 0);
        !s.ok()) {
      return s;
    }
  } else if (info.world_size > 1 && link != nullptr) {
    absl::StatusOr<std::string> met = link->Rendezvous("nccl", 1, id, std::chrono::minutes(10));
    if (!met.ok()) return met.status();
    id = std::move(*met);
  } else if (info.world_size > 1) {
    return absl::FailedPreconditionError(Cat(
        info.world_size, " ranks on GPUs (started by ", runtime::RankSourceName(info.source),
        "): the NCCL id goes from rank 0 to the others over mpirun's MPI or belayd's rendezvous; "
        "start the ranks with mpirun or under belayd"));
  }
  absl::StatusOr<std::unique_ptr<comm::Communicator>> nccl =
      comm::CreateNcclCommunicator(id, info.rank, info.world_size);
  if (!nccl.ok()) return nccl.status();
  w.comm = std::move(*nccl);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<World> JoinWorld(const runtime::RankInfo& info, Device device,
                                runtime::CoordinatorClient* link) {
  World w;
  if (device == Device::kCuda) {
    if (absl::Status s = UseRankGpu(info); !s.ok()) return s;
    if (absl::Status s = JoinNccl(info, link, w); !s.ok()) return s;
    return w;
  }
  if (info.world_size == 1) {
    w.comm = std::make_unique<comm::SingleCommunicator>();
    return w;
  }
  absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi = JoinMpi(info, w);
  if (!mpi.ok()) return mpi.status();
  w.comm = std::move(*mpi);
  return w;
}

}  // namespace belay::train

// This process's place among the ranks of a training job and the communicator that connects
// it to the others: MPI between CPU ranks, NCCL between GPU ranks, none for a single CPU rank.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/comm/mpi_communicator.h"
#include "worker/runtime/coordinator_client.h"
#include "worker/runtime/rank_env.h"
#include "worker/train/trainer.h"

namespace belay::train {

struct World {
  std::shared_ptr<comm::MpiSession> session;  // held while the communicator may use MPI
  std::unique_ptr<comm::Communicator> comm;
};

// Joins the job as rank `info`. On kCuda it first takes the GPU of the rank's local rank
// (runtime::ChooseCudaDevice); GPU ranks get NCCL (also a single one), whose id rank 0 hands
// to the others over mpirun's MPI or, under belayd (`link` not null), its rendezvous. Errors
// are this rank's own.
absl::StatusOr<World> JoinWorld(const runtime::RankInfo& info, Device device,
                                runtime::CoordinatorClient* link);

}  // namespace belay::train

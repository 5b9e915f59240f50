// The NCCL communicator (GPU ranks) behind a header without CUDA or NCCL types, so that code
// built with and without the CUDA path can ask for one. Without CUDA every call but
// NcclBuilt() is Unimplemented.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace belay::comm {

// Bytes of an NCCL unique id (what rank 0 creates and every rank needs to join).
inline constexpr size_t kNcclIdBytes = 128;

// Whether this build has the NCCL communicator.
bool NcclBuilt();

// A fresh unique id (rank 0 makes it and hands it to the others: MPI broadcast under mpirun,
// belayd's rendezvous under belayd).
absl::StatusOr<std::string> NewNcclId();

// Rank `rank` of `world_size` joins the group named by `id` on the current CUDA device
// (collective: returns once every rank has joined). The float spans of the collectives are
// device memory that must be ready when a call starts (the caller synchronises the stream
// that wrote them); the int64 and byte helpers, Broadcast and Barrier take host memory.
// See NcclCommunicator (nccl_communicator.h) for how each call is done.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(std::string_view id, int rank,
                                                                     int world_size);

}  // namespace belay::comm

// Which rank this process is, read from the launcher's environment in one place: Slurm
// (srun), mpirun (Open MPI) or belay's local backend; none of them means a single rank.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace belay::runtime {

enum class RankSource { kSingle, kSlurm, kMpirun, kBelay };

// "single", "Slurm", "mpirun", "belay".
std::string_view RankSourceName(RankSource source);

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes of this node (picks the GPU)
  RankSource source = RankSource::kSingle;
  friend bool operator==(const RankInfo&, const RankInfo&) = default;
};

// Looks up one environment variable; nullopt when it is not set.
using Environment = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment (getenv).
Environment ProcessEnvironment();
// A fixed set of variables, for tests.
Environment MapEnvironment(std::map<std::string, std::string, std::less<>> variables);

// The variables of each source (rank, world size, local rank):
//   Slurm   SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
//   mpirun  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   belay   BELAY_RANK, BELAY_WORLD_SIZE, BELAY_LOCAL_RANK
// A source is present when any of its three variables is set, and then all three must be:
// decimal digits only, world size at least 1, rank and local rank below the world size.
// Otherwise InvalidArgument naming the variable and its value. No source present gives rank 0
// of 1 (source kSingle). Several present must agree on all three numbers, or InvalidArgument
// names both sources and their values; when they agree, `source` is the first present in the
// order Slurm, mpirun, belay.
//
// mpirun inside a Slurm allocation (how belay's Slurm batch script launches CPU ranks) gives
// its ranks the SLURM_* variables of the step that started its daemons (one task per node),
// which describe that step, not the rank: when any OMPI_COMM_WORLD_* variable is set, the
// Slurm source is ignored and mpirun's numbers count.
absl::StatusOr<RankInfo> RankInfoFromEnvironment(const Environment& env);

// The CUDA device of a rank that sees `visible_devices` of them: with one visible device that
// one (Slurm's GPU binding, or CUDA_VISIBLE_DEVICES, gave each task its own), else the device
// numbered by the local rank — never the global rank modulo the count, which puts two ranks
// on one GPU whenever nodes differ in rank count. InvalidArgument when the local rank has no
// device of its own (more ranks on the node than GPUs); FailedPrecondition without devices.
absl::StatusOr<int> ChooseCudaDevice(const RankInfo& rank, int visible_devices);

}  // namespace belay::runtime

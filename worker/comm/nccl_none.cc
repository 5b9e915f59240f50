// A build without the CUDA path has no NCCL communicator.
#include "worker/comm/nccl.h"

namespace belay::comm {
namespace {

absl::Status NotBuilt() {
  return absl::UnimplementedError(
      "this belay was built without CUDA, so without NCCL (BELAY_WITH_CUDA)");
}

}  // namespace

bool NcclBuilt() { return false; }

absl::StatusOr<std::string> NewNcclId() { return NotBuilt(); }

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(std::string_view, int, int) {
  return NotBuilt();
}

}  // namespace belay::comm

// A build without the CUDA path has no GPU model.
#include "worker/model/gpu_model.h"

namespace belay::model {

absl::StatusOr<std::unique_ptr<GpuModel>> CreateGpuModel(const ParameterLayout&, int, int,
                                                         const ShardedOptimizer*) {
  return absl::UnimplementedError(
      "this belay was built without CUDA (BELAY_WITH_CUDA): no GPU training");
}

}  // namespace belay::model

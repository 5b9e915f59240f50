// What Trainer::Create refuses for the GPU path before touching data or a device.
#include "common/campaign_spec.h"
#include "gtest/gtest.h"
#include "worker/comm/single_communicator.h"
#include "worker/train/trainer.h"

namespace belay::train {
namespace {

CampaignSpec Spec(int zero_stage) {
  SpecParseOptions po;
  po.check_paths = false;
  SpecParseResult parsed = ParseCampaignSpec(R"([campaign]
name = "gpu"
[model]
n_layer = 1
n_head = 1
d_model = 8
seq_len = 8
vocab_size = 257
[data]
train = "/nonexistent/train_*.bin"
[train]
total_steps = 2
micro_batch = 1
global_batch = 1
lr = 1e-3
zero_stage = )" + std::to_string(zero_stage) + R"(
[checkpoint]
dir = "/tmp/unused"
)",
                                             "gpu.toml", po);
  EXPECT_TRUE(parsed.ok()) << parsed.errors[0].ToString();
  return *parsed.spec;
}

TEST(TrainerDevice, GpuTrainingRefusesZeroStageTwoWithTheReason) {
  comm::SingleCommunicator comm;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(Spec(2), comm, Device::kCuda);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("GPU training has ZeRO stages 0 and 1 so far"), std::string_view::npos)
      << t.status();
  // Stages 0 and 1 on the GPU, and stage 2 on the CPU, pass this check and fail only at the
  // data (which does not exist here).
  for (auto [stage, device] : {std::pair{0, Device::kCuda}, {1, Device::kCuda}, {2, Device::kCpu}}) {
    absl::StatusOr<std::unique_ptr<Trainer>> other = Trainer::Create(Spec(stage), comm, device);
    EXPECT_NE(other.status().message().find("shard glob"), std::string_view::npos) << stage << ": " << other.status();
  }
}

}  // namespace
}  // namespace belay::train

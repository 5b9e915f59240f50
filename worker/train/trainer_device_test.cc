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

TEST(TrainerDevice, GpuTrainingRefusesShardedZeroStagesWithTheReason) {
  comm::SingleCommunicator comm;
  for (int stage : {1, 2}) {
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(Spec(stage), comm, Device::kCuda);
    ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
    EXPECT_NE(t.status().message().find("GPU training has ZeRO stage 0 so far"), std::string_view::npos)
        << t.status();
  }
  // On the CPU the same stages are fine until the data is opened (which does not exist here).
  absl::StatusOr<std::unique_ptr<Trainer>> cpu = Trainer::Create(Spec(1), comm, Device::kCpu);
  EXPECT_NE(cpu.status().code(), absl::StatusCode::kInvalidArgument) << cpu.status();
}

}  // namespace
}  // namespace belay::train

// What Trainer::Create refuses for the GPU path before touching data or a device.
#include "common/campaign_spec.h"
#include "common/testing/tiny_campaign.h"
#include "gtest/gtest.h"
#include "worker/comm/single_communicator.h"
#include "worker/train/trainer.h"

namespace belay::train {
namespace {

CampaignSpec Spec(int zero_stage) {
  CampaignSpec spec = testing::TinyCampaignSpec();
  spec.campaign.name = "gpu";
  spec.data.train = {"/nonexistent/train_*.bin"};
  spec.train.total_steps = 2;
  spec.train.zero_stage = zero_stage;
  spec.checkpoint.dir = "/tmp/unused";
  absl::StatusOr<CampaignSpec> validated = testing::ValidatedCampaignSpec(spec);
  EXPECT_TRUE(validated.ok()) << validated.status();
  return *validated;
}

// One rank whose float collectives claim device memory: what the argument checks see of an
// NCCL communicator (no collective with data runs before they refuse).
class DeviceMemoryRank final : public comm::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  bool takes_device_memory() const override { return true; }
  comm::CommHandle StartAllReduceSum(std::span<float> d) override {
    return single_.StartAllReduceSum(d);
  }
  comm::CommHandle StartReduceScatterSum(std::span<const float> i, std::span<float> s) override {
    return single_.StartReduceScatterSum(i, s);
  }
  comm::CommHandle StartAllGather(std::span<const float> s, std::span<float> o) override {
    return single_.StartAllGather(s, o);
  }
  absl::Status Broadcast(std::span<std::byte> d, int root) override {
    return single_.Broadcast(d, root);
  }
  absl::Status Barrier() override { return single_.Barrier(); }
  absl::Status AllReduceSumInt64(std::span<int64_t> d) override {
    return single_.AllReduceSumInt64(d);
  }
  absl::Status AllGatherInt64(std::span<const int64_t> s, std::span<int64_t> o) override {
    return single_.AllGatherInt64(s, o);
  }
  absl::Status AllGatherBytes(std::span<const std::byte> s, std::span<std::byte> o) override {
    return single_.AllGatherBytes(s, o);
  }
  comm::CommStats bytes_sent() const override { return single_.bytes_sent(); }
  void ResetBytesSent() override { single_.ResetBytesSent(); }

 private:
  comm::SingleCommunicator single_;
};

TEST(TrainerDevice, GpuTrainingTakesEveryZeroStageAndRefusesAnUnknownOne) {
  DeviceMemoryRank comm;
  CampaignSpec three = Spec(0);
  three.train.zero_stage = 3;  // (the campaign file refuses it already)
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(three, comm, Device::kCuda);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("this trainer has stages 0, 1 and 2"), std::string_view::npos)
      << t.status();
  // Stages 0, 1 and 2 on the GPU pass the checks and fail only at the data (which does not
  // exist here), as on the CPU.
  for (int stage : {0, 1, 2}) {
    absl::StatusOr<std::unique_ptr<Trainer>> other =
        Trainer::Create(Spec(stage), comm, Device::kCuda);
    EXPECT_NE(other.status().message().find("shard glob"), std::string_view::npos)
        << stage << ": " << other.status();
  }
  comm::SingleCommunicator host;
  absl::StatusOr<std::unique_ptr<Trainer>> cpu = Trainer::Create(Spec(2), host, Device::kCpu);
  EXPECT_NE(cpu.status().message().find("shard glob"), std::string_view::npos) << cpu.status();
}

TEST(TrainerDevice, GpuTrainingRefusesACommunicatorOverHostMemory) {
  comm::SingleCommunicator host;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(Spec(0), host, Device::kCuda);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
  EXPECT_NE(t.status().message().find("device memory"), std::string_view::npos) << t.status();
}

}  // namespace
}  // namespace belay::train

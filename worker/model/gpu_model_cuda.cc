// GpuModel over CudaGpt2.
#include <array>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "worker/model/cuda_gpt2.h"
#include "worker/model/gpu_model.h"

namespace belay::model {
namespace {

class CudaGpuModel final : public GpuModel {
 public:
  CudaGpuModel(std::unique_ptr<CudaGpt2> model, int64_t size)
      : model_(std::move(model)), size_(size) {}
  ~CudaGpuModel() override {
    for (cudaEvent_t e : marks_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }

  absl::Status CreateMarks() {
    for (cudaEvent_t& e : marks_) {
      BELAY_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    return absl::OkStatus();
  }

  absl::Status SetState(const float* params, const float* m, const float* v) override {
    if (absl::Status s = model_->SetParameters(params); !s.ok()) return s;
    if (m == nullptr || v == nullptr) return absl::OkStatus();
    return model_->SetMoments(m, v);
  }
  absl::Status GetState(float* params, float* m, float* v) const override {
    if (absl::Status s = model_->GetParameters(params); !s.ok()) return s;
    return model_->GetMoments(m, v);
  }
  absl::StatusOr<double> Forward(const int32_t* inputs, const int32_t* targets, const uint8_t* mask,
                                 float loss_scale) override {
    return model_->Forward(inputs, targets, mask, loss_scale);
  }
  absl::Status Backward(BackwardHook* hook) override { return model_->Backward(hook); }
  absl::Status ZeroGradients() override { return model_->ZeroGradients(); }
  std::span<float> DeviceGradients() override {
    if (model_->device_gradients() == nullptr) return {};
    return {model_->device_gradients(), static_cast<size_t>(size_)};
  }
  absl::StatusOr<double> GradientSumOfSquares() override { return model_->GradientSumOfSquares(); }
  absl::Status Update(const kernels::cpu::AdamWParams& p, float weight_decay, float clip) override {
    return model_->Update(p, weight_decay, clip);
  }
  absl::Status Synchronize() override { return model_->Synchronize(); }
  absl::StatusOr<CUevent_st*> Mark(int slot) override {
    if (slot < 0 || slot >= kMarkSlots) return absl::InvalidArgumentError("Mark: no such slot");
    BELAY_CUDA_RETURN_IF_ERROR(
        cudaEventRecord(marks_[static_cast<size_t>(slot)], model_->stream()));
    return marks_[static_cast<size_t>(slot)];
  }
  absl::Status AwaitMark(int slot) override {
    if (slot < 0 || slot >= kMarkSlots)
      return absl::InvalidArgumentError("AwaitMark: no such slot");
    BELAY_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(marks_[static_cast<size_t>(slot)]));
    return absl::OkStatus();
  }
  size_t device_bytes() const override { return model_->device_bytes(); }
  std::span<float> DeviceGradientShard() override {
    return {model_->device_gradient_shard(), static_cast<size_t>(model_->shard_size())};
  }
  std::span<float> DeviceMasterShard() override {
    return {model_->device_master(), static_cast<size_t>(model_->shard_size())};
  }
  std::span<float> DeviceStaging(int slot) override {
    if (model_->device_staging(0) == nullptr || slot < 0 || slot > 1) return {};
    return {model_->device_staging(slot), static_cast<size_t>(model_->staging_size())};
  }
  std::span<float> DeviceGroupBuffer(int group) override {
    if (model_->device_group_buffer(group) == nullptr) return {};
    return {model_->device_group_buffer(group),
            static_cast<size_t>(model_->group_buffer_size(group))};
  }
  absl::Status AddToGradientShard(std::span<const float> from, int64_t shard_offset,
                                  bool accumulate) override {
    return model_->AddToGradientShard(from.data(), static_cast<int64_t>(from.size()), shard_offset,
                                      accumulate);
  }
  absl::Status PackGradients(const std::vector<Segment>& segments, int64_t padded,
                             int slot) override {
    return model_->PackGradients(segments, padded, slot);
  }
  absl::Status UnpackParameters(const std::vector<Segment>& segments,
                                std::span<const float> from) override {
    return model_->UnpackParameters(segments, from.data(), static_cast<int64_t>(from.size()));
  }
  absl::StatusOr<double> GradientShardSumOfSquares() override {
    return model_->GradientShardSumOfSquares();
  }
  absl::Status UpdateShard(const kernels::cpu::AdamWParams& p, float weight_decay,
                           float clip) override {
    return model_->UpdateShard(p, weight_decay, clip);
  }
  std::string attention() const override {
    return model_->fused_attention() ? "fused" : "materialised";
  }

 private:
  std::unique_ptr<CudaGpt2> model_;
  int64_t size_;
  std::array<cudaEvent_t, kMarkSlots> marks_{};
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuModel>> CreateGpuModel(const ParameterLayout& layout, int B,
                                                         int T, const ShardedOptimizer* sharded) {
  absl::StatusOr<std::unique_ptr<CudaGpt2>> m =
      CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, sharded);
  if (!m.ok()) return m.status();
  auto model = std::make_unique<CudaGpuModel>(std::move(*m), layout.total());
  if (absl::Status s = model->CreateMarks(); !s.ok()) return s;
  return std::unique_ptr<GpuModel>(std::move(model));
}

}  // namespace belay::model

// Forward/backward over the micro-batches of one update, clipping, the optimizer's update.
#include "worker/train/update.h"

#include <algorithm>
#include <cmath>

#include "kernels/grad_norm.h"
#include "worker/model/schedule.h"

namespace belay::train {

UpdateResult UpdateOnBatch(model::CpuModel& model, optim::Optimizer& optimizer,
                           const TrainSpec& train, int64_t total_steps, int64_t step,
                           std::span<float> params, std::span<float> grads, const int32_t* inputs,
                           const int32_t* targets, const uint8_t* masks, int64_t accum) {
  const size_t per_micro = static_cast<size_t>(model.B()) * static_cast<size_t>(model.T());
  const size_t positions = per_micro * static_cast<size_t>(accum);
  UpdateResult r;
  r.counted = std::count(masks, masks + positions, uint8_t{1});
  // The loss is the mean over the batch's counted positions, so each micro-batch's summed
  // loss is scaled by the same 1/counted.
  const float scale = r.counted > 0 ? 1.0f / static_cast<float>(r.counted) : 0.0f;

  std::fill(grads.begin(), grads.end(), 0.0f);
  double loss_sum = 0;
  for (int64_t a = 0; a < accum; ++a) {
    size_t off = static_cast<size_t>(a) * per_micro;
    loss_sum += model.Forward(params.data(), inputs + off, targets + off, masks + off);
    model.Backward(params.data(), grads.data(), scale);
  }
  r.loss = r.counted > 0 ? loss_sum / static_cast<double>(r.counted) : 0.0;

  const int64_t n = static_cast<int64_t>(grads.size());
  r.grad_norm = std::sqrt(kernels::cpu::SumOfSquares(grads.data(), n));
  float clip = kernels::cpu::ClipFactor(r.grad_norm, train.grad_clip);
  if (clip < 1.0f) kernels::cpu::Scale(grads.data(), n, clip);

  r.lr = model::LearningRate(train, total_steps, step);
  optimizer.Update(params.data(), grads.data(), r.lr, step);
  return r;
}

}  // namespace belay::train

// One optimizer update on a prepared batch: the part of the training step that does not
// depend on where the tokens came from. Shared by the Trainer and the reference tests.
#pragma once

#include <cstdint>
#include <span>

#include "common/campaign_spec.h"
#include "worker/model/cpu_model.h"
#include "worker/optim/optimizer.h"

namespace belay::train {

struct UpdateResult {
  double loss = 0;       // mean loss over the counted positions
  int64_t counted = 0;   // label positions that counted (mask 1)
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
};

// Runs forward and backward over `accum` micro-batches laid out one after another in
// inputs/targets/masks (each model.B() × model.T()), normalising by the counted positions of
// the whole batch, clips to train.grad_clip and applies update number `step`
// (1-based) of the campaign's optimizer with the schedule's learning rate. grads is scratch of the
// parameter layout's size.
UpdateResult UpdateOnBatch(model::CpuModel& model, optim::Optimizer& optimizer,
                           const TrainSpec& train, int64_t total_steps, int64_t step,
                           std::span<float> params, std::span<float> grads, const int32_t* inputs,
                           const int32_t* targets, const uint8_t* masks, int64_t accum);

}  // namespace belay::train

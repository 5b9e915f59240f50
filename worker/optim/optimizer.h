// The optimizer state of one rank and the update it makes: AdamW or AdEMAMix (the campaign's
// [optimizer]) over the parameters this rank owns, with weight decay only on the tensors the
// layout marks for it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/campaign_spec.h"
#include "kernels/adamw.h"
#include "kernels/ademamix.h"
#include "worker/model/params.h"

namespace belay::optim {

// A run of parameters the optimizer updates: params[param_offset, +size) from
// grads/states[state_offset, +size). Pieces never straddle two tensors.
struct UpdatePiece {
  int64_t param_offset = 0;  // in the flat parameter buffer
  int64_t state_offset = 0;  // in the gradient and state buffers this optimizer is given
  int64_t size = 0;
  bool decay = false;  // weight decay applies
};

// One piece per tensor, states laid out like the parameters.
std::vector<UpdatePiece> WholeTensors(const std::vector<model::TensorView>& tensors);

class Optimizer {
 public:
  // Over `pieces`, with states of `state_size` elements each: laid out like the parameters
  // (WholeTensors: one rank, or ZeRO stage 0 where every rank holds the whole state), or this
  // rank's shard (stages 1 and 2).
  Optimizer(std::vector<UpdatePiece> pieces, int64_t state_size, const TrainSpec& train,
            const OptimizerSpec& optimizer);

  OptimizerKind kind() const { return optimizer_.name; }

  // Applies update number `step` (1-based) with learning rate `lr`: for every piece,
  // params at param_offset from grads at state_offset.
  void Update(float* params, const float* grads, double lr, int64_t step);
  // The AdamW hyperparameters of update `step` with learning rate `lr` (weight decay 0: it is
  // per piece), for an update made elsewhere (the GPU's).
  kernels::cpu::AdamWParams AdamWParams(double lr, int64_t step) const;
  // The same for AdEMAMix.
  kernels::cpu::AdemamixParams AdemamixParams(double lr, int64_t step) const;

  const std::vector<UpdatePiece>& pieces() const { return pieces_; }
  // The state buffers, in StateNames order: AdamW's m and v; AdEMAMix's fast and slow EMAs of
  // the gradient and v.
  std::vector<std::vector<float>>& states() { return states_; }
  const std::vector<std::vector<float>>& states() const { return states_; }
  // What checkpoints call them ("adam.m", "adam.v"; "ademamix.m_fast", "ademamix.m_slow",
  // "ademamix.v").
  static std::vector<std::string_view> StateNames(OptimizerKind kind);
  // Bytes of optimizer state held by this rank.
  int64_t state_bytes() const;

 private:
  std::vector<UpdatePiece> pieces_;
  TrainSpec train_;
  OptimizerSpec optimizer_;
  std::vector<std::vector<float>> states_;
};

}  // namespace belay::optim

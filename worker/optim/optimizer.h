// The optimizer state of one rank and the update it makes: AdamW over the parameters this
// rank owns, with weight decay only on the tensors the layout marks for it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/campaign_spec.h"
#include "kernels/adamw.h"
#include "worker/model/params.h"

namespace belay::optim {

// A run of parameters the optimizer updates: params[param_offset, +size) from
// grads/m/v[state_offset, +size). Pieces never straddle two tensors.
struct UpdatePiece {
  int64_t param_offset = 0;  // in the flat parameter buffer
  int64_t state_offset = 0;  // in the gradient and moment buffers this optimizer is given
  int64_t size = 0;
  bool decay = false;  // weight decay applies
};

class AdamW {
 public:
  // Over every parameter; gradients and moments are laid out like the parameters (one rank,
  // or ZeRO stage 0 where every rank holds the whole state).
  AdamW(const model::ParameterLayout& layout, const TrainSpec& train);
  // Over `pieces` only, with moments of `state_size` elements (ZeRO stages 1 and 2: this
  // rank's shard).
  AdamW(std::vector<UpdatePiece> pieces, int64_t state_size, const TrainSpec& train);

  // Applies update number `step` (1-based) with learning rate `lr`: for every piece,
  // params at param_offset from grads at state_offset.
  void Update(float* params, const float* grads, double lr, int64_t step);
  // The hyperparameters of update `step` with learning rate `lr` (weight decay 0: it is per
  // piece), for an update made elsewhere (the GPU's).
  kernels::cpu::AdamWParams Params(double lr, int64_t step) const;

  const std::vector<UpdatePiece>& pieces() const { return pieces_; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  // Bytes of optimizer state held by this rank (m and v).
  int64_t state_bytes() const {
    return static_cast<int64_t>((m_.size() + v_.size()) * sizeof(float));
  }

 private:
  std::vector<UpdatePiece> pieces_;
  TrainSpec train_;
  std::vector<float> m_, v_;
};

}  // namespace belay::optim

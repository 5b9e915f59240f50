// The optimizer state of one rank and the update it makes: AdamW over the parameters this
// rank owns, with weight decay only on the tensors the layout marks for it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/campaign_spec.h"
#include "worker/model/params.h"

namespace belay::optim {

class AdamW {
 public:
  AdamW(const model::ParameterLayout& layout, const TrainSpec& train);

  // Applies update number `step` (1-based) with learning rate `lr` to params from grads
  // (both laid out by the layout).
  void Update(float* params, const float* grads, double lr, int64_t step);

  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  // Bytes of optimizer state held by this rank (m and v).
  int64_t state_bytes() const { return static_cast<int64_t>((m_.size() + v_.size()) * sizeof(float)); }

 private:
  const model::ParameterLayout& layout_;
  TrainSpec train_;
  std::vector<float> m_, v_;
};

}  // namespace belay::optim

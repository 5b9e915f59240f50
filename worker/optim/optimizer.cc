// AdamW and AdEMAMix over runs of the flat parameter buffer.
#include "worker/optim/optimizer.h"

#include <utility>

namespace belay::optim {

std::vector<UpdatePiece> WholeTensors(const std::vector<model::TensorView>& tensors) {
  std::vector<UpdatePiece> pieces;
  for (const model::TensorView& t : tensors)
    pieces.push_back({t.offset, t.offset, t.size, t.decay});
  return pieces;
}

Optimizer::Optimizer(std::vector<UpdatePiece> pieces, int64_t state_size, const TrainSpec& train,
                     const OptimizerSpec& optimizer)
    : pieces_(std::move(pieces)),
      train_(train),
      optimizer_(optimizer),
      states_(StateNames(optimizer.name).size(),
              std::vector<float>(static_cast<size_t>(state_size), 0.0f)) {}

std::vector<std::string_view> Optimizer::StateNames(OptimizerKind kind) {
  if (kind == OptimizerKind::kAdemamix) return {"ademamix.m_fast", "ademamix.m_slow", "ademamix.v"};
  return {"adam.m", "adam.v"};
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const std::vector<float>& s : states_)
    bytes += static_cast<int64_t>(s.size() * sizeof(float));
  return bytes;
}

kernels::cpu::AdamWParams Optimizer::AdamWParams(double lr, int64_t step) const {
  kernels::cpu::AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(train_.beta1);
  p.beta2 = static_cast<float>(train_.beta2);
  p.eps = static_cast<float>(train_.eps);
  p.step = step;
  return p;
}

kernels::cpu::AdemamixParams Optimizer::AdemamixParams(double lr, int64_t step) const {
  kernels::cpu::AdemamixParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(train_.beta1);
  p.beta2 = static_cast<float>(train_.beta2);
  p.beta3 = static_cast<float>(optimizer_.beta3);
  p.alpha = static_cast<float>(optimizer_.alpha);
  p.eps = static_cast<float>(train_.eps);
  p.step = step;
  p.alpha_warmup = optimizer_.alpha_warmup_steps;
  p.beta3_warmup = optimizer_.beta3_warmup_steps;
  return p;
}

void Optimizer::Update(float* params, const float* grads, double lr, int64_t step) {
  const auto wd = static_cast<float>(train_.weight_decay);
  if (optimizer_.name == OptimizerKind::kAdemamix) {
    kernels::cpu::AdemamixParams p = AdemamixParams(lr, step);
    for (const UpdatePiece& piece : pieces_) {
      p.weight_decay = piece.decay ? wd : 0.0f;
      const size_t s = static_cast<size_t>(piece.state_offset);
      kernels::cpu::AdemamixUpdate(params + piece.param_offset, grads + s, states_[0].data() + s,
                                   states_[1].data() + s, states_[2].data() + s, piece.size, p);
    }
    return;
  }
  kernels::cpu::AdamWParams p = AdamWParams(lr, step);
  for (const UpdatePiece& piece : pieces_) {
    p.weight_decay = piece.decay ? wd : 0.0f;
    const size_t s = static_cast<size_t>(piece.state_offset);
    kernels::cpu::AdamWUpdate(params + piece.param_offset, grads + s, states_[0].data() + s,
                              states_[1].data() + s, piece.size, p);
  }
}

}  // namespace belay::optim

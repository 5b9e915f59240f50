// AdamW over runs of the flat parameter buffer.
#include "worker/optim/optimizer.h"

#include <utility>

#include "kernels/adamw.h"

namespace belay::optim {
namespace {

std::vector<UpdatePiece> WholeTensors(const model::ParameterLayout& layout) {
  std::vector<UpdatePiece> pieces;
  for (const model::TensorView& t : layout.tensors()) {
    pieces.push_back({t.offset, t.offset, t.size, t.decay});
  }
  return pieces;
}

}  // namespace

AdamW::AdamW(const model::ParameterLayout& layout, const TrainSpec& train)
    : AdamW(WholeTensors(layout), layout.total(), train) {}

AdamW::AdamW(std::vector<UpdatePiece> pieces, int64_t state_size, const TrainSpec& train)
    : pieces_(std::move(pieces)),
      train_(train),
      m_(static_cast<size_t>(state_size), 0.0f),
      v_(static_cast<size_t>(state_size), 0.0f) {}

kernels::cpu::AdamWParams AdamW::Params(double lr, int64_t step) const {
  kernels::cpu::AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(train_.beta1);
  p.beta2 = static_cast<float>(train_.beta2);
  p.eps = static_cast<float>(train_.eps);
  p.step = step;
  return p;
}

void AdamW::Update(float* params, const float* grads, double lr, int64_t step) {
  kernels::cpu::AdamWParams p = Params(lr, step);
  for (const UpdatePiece& piece : pieces_) {
    p.weight_decay = piece.decay ? static_cast<float>(train_.weight_decay) : 0.0f;
    const size_t s = static_cast<size_t>(piece.state_offset);
    kernels::cpu::AdamWUpdate(params + piece.param_offset, grads + s, m_.data() + s, v_.data() + s,
                              piece.size, p);
  }
}

}  // namespace belay::optim

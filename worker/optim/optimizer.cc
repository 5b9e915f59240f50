// AdamW over the flat parameter buffer, tensor by tensor.
#include "worker/optim/optimizer.h"

#include "kernels/adamw.h"

namespace belay::optim {

AdamW::AdamW(const model::ParameterLayout& layout, const TrainSpec& train)
    : layout_(layout),
      train_(train),
      m_(static_cast<size_t>(layout.total()), 0.0f),
      v_(static_cast<size_t>(layout.total()), 0.0f) {}

void AdamW::Update(float* params, const float* grads, double lr, int64_t step) {
  for (const model::TensorView& t : layout_.tensors()) {
    kernels::cpu::AdamWParams p;
    p.lr = static_cast<float>(lr);
    p.beta1 = static_cast<float>(train_.beta1);
    p.beta2 = static_cast<float>(train_.beta2);
    p.eps = static_cast<float>(train_.eps);
    p.weight_decay = t.decay ? static_cast<float>(train_.weight_decay) : 0.0f;
    p.step = step;
    size_t o = static_cast<size_t>(t.offset);
    kernels::cpu::AdamWUpdate(params + o, grads + o, m_.data() + o, v_.data() + o, t.size, p);
  }
}

}  // namespace belay::optim

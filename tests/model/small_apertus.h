// The small Apertus the PyTorch reference tests run: GQA and QK-norm at head size 16, and a
// Llama-3 RoPE scaling whose every branch is used.
#pragma once

#include "worker/model/apertus.h"

namespace belay::testing {

// With an original context of 32, the first frequency is kept, the second interpolated and
// the rest divided by 8.
inline model::ApertusConfig SmallApertusConfig() {
  model::ApertusConfig c;
  c.vocab_size = 97;  // padded to 128
  c.n_layer = 2;
  c.d_model = 64;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_ff = 96;
  c.rope = {.theta = 10000.0,
            .factor = 8.0,
            .low_freq_factor = 1.0,
            .high_freq_factor = 4.0,
            .original_context = 32};
  c.qk_norm = true;
  return c;
}

}  // namespace belay::testing

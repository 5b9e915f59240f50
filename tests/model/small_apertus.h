// The small Apertus the PyTorch reference tests run: GQA and QK-norm at head size 16, and a
// Llama-3 RoPE scaling whose every branch is used; its parameters, and how
// tests/model/apertus_reference.py is told about it.
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

#include "common/campaign_spec.h"
#include "common/rng.h"
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

// InitApertus(seed) plus N(0, 0.1) noise (from noise_seed) on every real element: larger than
// initial weights, so that every op works in its non-linear range and a wrong formula (or a
// query or key row in the wrong place) shows. The padded vocabulary rows stay 0.
inline std::vector<float> NoisyApertusParams(const model::ApertusLayout& layout, uint64_t seed,
                                             uint64_t noise_seed) {
  std::vector<float> params(static_cast<size_t>(layout.total()));
  model::InitApertus(layout, params, seed);
  const model::ApertusConfig& c = layout.config();
  SplitMix64 noise(noise_seed);
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const model::TensorView& t = layout.tensors()[i];
    const bool vocab = layout.kind(i) == model::ApertusTensor::kEmbed ||
                       layout.kind(i) == model::ApertusTensor::kLmHead;
    const int64_t real = vocab ? int64_t{c.vocab_size} * c.d_model : t.size;
    for (int64_t j = 0; j < real; ++j)
      params[static_cast<size_t>(t.offset + j)] += static_cast<float>(0.1 * noise.Normal());
  }
  return params;
}

// The keys of config.json that tests/model/apertus_reference.py reads: the model and the
// tensors of belay's flat layout (name, offset, shape), as members of a JSON object whose
// braces and other keys the caller writes.
inline void WriteApertusReferenceKeys(std::ostream& out, const model::ApertusLayout& layout) {
  const model::ApertusConfig& c = layout.config();
  out << "\"vocab_size\": " << c.vocab_size << ", \"n_layer\": " << c.n_layer
      << ", \"d_model\": " << c.d_model << ", \"n_head\": " << c.n_head
      << ", \"n_kv_head\": " << c.n_kv_head << ", \"d_ff\": " << c.d_ff
      << ", \"rope\": {\"theta\": " << c.rope.theta << ", \"factor\": " << c.rope.factor
      << ", \"low_freq_factor\": " << c.rope.low_freq_factor
      << ", \"high_freq_factor\": " << c.rope.high_freq_factor
      << ", \"original_context\": " << c.rope.original_context << "}"
      << ", \"qk_norm\": " << (c.qk_norm ? "true" : "false") << ", \"activation\": \""
      << ToString(c.activation) << "\""
      << ", \"tie_embeddings\": " << (c.tie_embeddings ? "true" : "false")
      << ", \"norm_eps\": " << c.norm_eps << ", \"eod_token\": " << c.eod_token
      << ", \"tensors\": [";
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const model::TensorView& t = layout.tensors()[i];
    out << (i ? ", " : "") << "{\"name\": \"" << t.name << "\", \"offset\": " << t.offset
        << ", \"shape\": [";
    for (size_t j = 0; j < t.shape.size(); ++j) out << (j ? ", " : "") << t.shape[j];
    out << "]}";
  }
  out << "]";
}

}  // namespace belay::testing

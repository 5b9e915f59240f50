// A belay model in the layout of its Hugging Face transformers class: the state dict's
// tensor names and shapes, and config.json.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/export/checkpoint_model.h"
#include "worker/export/safetensors.h"

namespace belay::hf {

struct HfModel {
  std::vector<NamedTensor> tensors;  // in the order the file should hold them
  nlohmann::ordered_json config;     // config.json, without torch_dtype
};

// GPT-2 as GPT2LMHeadModel: the real vocabulary rows of the embedding only, Conv1D weights
// stored (in, out), the LM head tied to transformer.wte.weight and so not stored.
HfModel Gpt2ToHf(const model::Gpt2Config& config, const std::vector<float>& params);

// Apertus as ApertusForCausalLM: the fused query/key/value weight split into q_proj, k_proj
// and v_proj (both use the rotate-half pairing of RoPE, so no rows are permuted), xIELU's
// raw scalars as act_fn.alpha_p / alpha_n (Hugging Face parametrises them as belay does) with
// the fixed beta and eps. FailedPrecondition for what ApertusForCausalLM cannot compute:
// SwiGLU (its MLP has no gate) and a model without QK-norm (it always normalises).
absl::StatusOr<HfModel> ApertusToHf(const SavedApertus& saved, const std::vector<float>& params);

// The one of the two the checkpoint's architecture calls for.
absl::StatusOr<HfModel> ToHf(const CheckpointModel& checkpoint);

}  // namespace belay::hf

// belay's parameter layouts mapped onto the Hugging Face models' state dicts.
#include "worker/export/hf_model.h"

#include <charconv>
#include <cstdlib>
#include <string>

#include "common/strings.h"
#include "kernels/xielu.h"

namespace belay::hf {
namespace {

// Rows [row, row + rows) of a row-major matrix of `cols` columns starting at `base`.
std::vector<float> Rows(const float* base, int64_t row, int64_t rows, int64_t cols) {
  return std::vector<float>(base + row * cols, base + (row + rows) * cols);
}

// The (cols, rows) transpose of a row-major (rows, cols) matrix.
std::vector<float> Transposed(const float* m, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = m[r * cols + c];
  }
  return out;
}

// The decimal that reads back as `v` in the fewest digits (1e-5f is written 1e-05, not
// 9.999999747378752e-06).
double ShortestDecimal(float v) {
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof buf, v);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

}  // namespace

HfModel Gpt2ToHf(const model::Gpt2Config& c, const std::vector<float>& params) {
  const model::ParameterLayout layout(c);
  const model::ParameterLayout::Views<const float> p = layout.Bind(params.data());
  const int64_t C = c.d_model, V = c.vocab_size, T = c.max_seq_len;
  HfModel out;
  auto add = [&out](std::string name, std::vector<int64_t> shape, std::vector<float> values) {
    out.tensors.push_back({std::move(name), std::move(shape), std::move(values)});
  };
  add("transformer.wte.weight", {V, C}, Rows(p.wte, 0, V, C));
  add("transformer.wpe.weight", {T, C}, Rows(p.wpe, 0, T, C));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string h = Cat("transformer.h.", l, ".");
    add(h + "ln_1.weight", {C}, Rows(p.ln1w, l, 1, C));
    add(h + "ln_1.bias", {C}, Rows(p.ln1b, l, 1, C));
    // belay keeps (out, in) matrices; HF's Conv1D keeps (in, out).
    add(h + "attn.c_attn.weight", {C, 3 * C}, Transposed(p.qkvw + l * 3 * C * C, 3 * C, C));
    add(h + "attn.c_attn.bias", {3 * C}, Rows(p.qkvb, l, 1, 3 * C));
    add(h + "attn.c_proj.weight", {C, C}, Transposed(p.attprojw + l * C * C, C, C));
    add(h + "attn.c_proj.bias", {C}, Rows(p.attprojb, l, 1, C));
    add(h + "ln_2.weight", {C}, Rows(p.ln2w, l, 1, C));
    add(h + "ln_2.bias", {C}, Rows(p.ln2b, l, 1, C));
    add(h + "mlp.c_fc.weight", {C, 4 * C}, Transposed(p.fcw + l * 4 * C * C, 4 * C, C));
    add(h + "mlp.c_fc.bias", {4 * C}, Rows(p.fcb, l, 1, 4 * C));
    add(h + "mlp.c_proj.weight", {4 * C, C}, Transposed(p.fcprojw + l * 4 * C * C, C, 4 * C));
    add(h + "mlp.c_proj.bias", {C}, Rows(p.fcprojb, l, 1, C));
  }
  add("transformer.ln_f.weight", {C}, Rows(p.lnfw, 0, 1, C));
  add("transformer.ln_f.bias", {C}, Rows(p.lnfb, 0, 1, C));
  out.config = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"vocab_size", V},
      {"n_positions", T},
      {"n_ctx", T},
      {"n_embd", C},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_inner", nullptr},  // 4 × n_embd
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", 1e-5},
      {"initializer_range", 0.02},
      // belay trains without dropout.
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"scale_attn_weights", true},
      {"tie_word_embeddings", true},
      // The tokenizer is not part of the checkpoint: GPT2Config's defaults (50256) would
      // name tokens outside a smaller vocabulary.
      {"bos_token_id", nullptr},
      {"eos_token_id", nullptr},
  };
  return out;
}

absl::StatusOr<HfModel> ApertusToHf(const SavedApertus& saved, const std::vector<float>& params) {
  const model::ApertusConfig& c = saved.config;
  if (c.activation == model::MlpActivation::kSwiglu) {
    return absl::FailedPreconditionError(
        "Hugging Face's ApertusForCausalLM has no gated MLP: a model trained with "
        "model.activation = \"swiglu\" cannot be exported as Apertus");
  }
  if (!c.qk_norm) {
    return absl::FailedPreconditionError(
        "Hugging Face's ApertusForCausalLM always applies QK-norm: a model trained with "
        "model.qk_norm = false cannot be exported as Apertus");
  }
  const model::ApertusLayout layout(c);
  const model::ApertusLayout::Views<const float> p = layout.Bind(params.data());
  const int64_t C = c.d_model, V = c.vocab_size, F = c.d_ff, hs = c.head_size();
  const int64_t NH = c.n_head, NKV = c.n_kv_head, W = (NH + 2 * NKV) * hs;
  HfModel out;
  auto add = [&out](std::string name, std::vector<int64_t> shape, std::vector<float> values) {
    out.tensors.push_back({std::move(name), std::move(shape), std::move(values)});
  };
  add("model.embed_tokens.weight", {V, C}, Rows(p.embed, 0, V, C));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string h = Cat("model.layers.", l, ".");
    add(h + "attention_layernorm.weight", {C}, Rows(p.attn_norm, l, 1, C));
    // The fused weight's rows: NH query heads, then NKV key heads, then NKV value heads.
    const float* qkv = p.qkv + l * W * C;
    add(h + "self_attn.q_proj.weight", {NH * hs, C}, Rows(qkv, 0, NH * hs, C));
    add(h + "self_attn.k_proj.weight", {NKV * hs, C}, Rows(qkv, NH * hs, NKV * hs, C));
    add(h + "self_attn.v_proj.weight", {NKV * hs, C}, Rows(qkv, (NH + NKV) * hs, NKV * hs, C));
    add(h + "self_attn.o_proj.weight", {C, NH * hs}, Rows(p.attn_proj, l * C, C, NH * hs));
    add(h + "self_attn.q_norm.weight", {hs}, Rows(p.q_norm, l, 1, hs));
    add(h + "self_attn.k_norm.weight", {hs}, Rows(p.k_norm, l, 1, hs));
    add(h + "feedforward_layernorm.weight", {C}, Rows(p.mlp_norm, l, 1, C));
    add(h + "mlp.up_proj.weight", {F, C}, Rows(p.mlp_up, l * F, F, C));
    add(h + "mlp.down_proj.weight", {C, F}, Rows(p.mlp_down, l * C, C, F));
    if (c.activation == model::MlpActivation::kXielu) {
      // HF's XIELUActivation: alpha_p = softplus(alpha_p), alpha_n = beta + softplus(alpha_n),
      // the raw values of shape (1); beta and eps are buffers of the state dict.
      add(h + "mlp.act_fn.alpha_p", {1}, {p.xielu_ap[l]});
      add(h + "mlp.act_fn.alpha_n", {1}, {p.xielu_an[l]});
      add(h + "mlp.act_fn.beta", {}, {kernels::cpu::kXieluBeta});
      add(h + "mlp.act_fn.eps", {}, {kernels::cpu::kXieluEps});
    }
  }
  add("model.norm.weight", {C}, Rows(p.final_norm, 0, 1, C));
  if (!c.tie_embeddings) add("lm_head.weight", {V, C}, Rows(p.lm_head, 0, V, C));

  const bool scaled = c.rope.factor != 1.0;
  nlohmann::ordered_json scaling = nullptr;
  nlohmann::ordered_json rope = {{"rope_type", "default"}, {"rope_theta", c.rope.theta}};
  if (scaled) {
    scaling = {{"rope_type", "llama3"},
               {"factor", c.rope.factor},
               {"low_freq_factor", c.rope.low_freq_factor},
               {"high_freq_factor", c.rope.high_freq_factor},
               // A context length: an integer, as Hugging Face's configs write it (the
               // campaign file's original_context is one; the kernels hold it as a double).
               {"original_max_position_embeddings", static_cast<int64_t>(c.rope.original_context)}};
    rope = scaling;
    rope["rope_theta"] = c.rope.theta;
  }
  out.config = {
      {"architectures", {"ApertusForCausalLM"}},
      {"model_type", "apertus"},
      {"vocab_size", V},
      {"hidden_size", C},
      {"intermediate_size", F},
      {"num_hidden_layers", c.n_layer},
      {"num_attention_heads", NH},
      {"num_key_value_heads", NKV},
      {"head_dim", hs},
      // belay's GELU is the tanh approximation.
      {"hidden_act", c.activation == model::MlpActivation::kXielu ? "xielu" : "gelu_new"},
      {"max_position_embeddings", saved.max_seq_len},
      {"rms_norm_eps", ShortestDecimal(c.norm_eps)},
      {"qk_norm", true},
      {"tie_word_embeddings", c.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", 0.02},
      // transformers 4.x reads rope_theta and rope_scaling; 5.x reads rope_parameters, and
      // without them assumes Apertus' own llama3 scaling, so both are written.
      {"rope_theta", c.rope.theta},
      {"rope_scaling", scaling},
      {"rope_parameters", rope},
      // The tokenizer is not part of the checkpoint; the document end is the natural EOS.
      {"pad_token_id", nullptr},
      {"bos_token_id", nullptr},
      {"eos_token_id", c.eod_token >= 0 ? nlohmann::ordered_json(c.eod_token) : nullptr},
  };
  return out;
}

absl::StatusOr<HfModel> ToHf(const CheckpointModel& checkpoint) {
  if (const auto* g = std::get_if<model::Gpt2Config>(&checkpoint.config))
    return Gpt2ToHf(*g, checkpoint.params);
  return ApertusToHf(std::get<SavedApertus>(checkpoint.config), checkpoint.params);
}

}  // namespace belay::hf

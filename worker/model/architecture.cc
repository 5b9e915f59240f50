// GPT-2 and Apertus behind one Architecture.
#include "worker/model/architecture.h"

#include <utility>

#include "common/strings.h"
#include "worker/model/gpt2.h"

namespace belay::model {
namespace {

class Gpt2Architecture final : public Architecture {
 public:
  explicit Gpt2Architecture(const Gpt2Config& config) : layout_(config) {}

  ModelArch arch() const override { return ModelArch::kGpt2; }
  const std::vector<TensorView>& tensors() const override { return layout_.tensors(); }
  int64_t total() const override { return layout_.total(); }
  std::vector<std::vector<Segment>> GradientGroups() const override {
    return model::GradientGroups(layout_);
  }
  void Init(std::span<float> params, uint64_t seed) const override {
    InitGpt2(layout_, params, seed);
  }
  nlohmann::json Config() const override {
    const Gpt2Config& c = layout_.config();
    return {{"arch", "gpt2"},
            {"n_layer", c.n_layer},
            {"n_head", c.n_head},
            {"d_model", c.d_model},
            {"max_seq_len", c.max_seq_len},
            {"vocab_size", c.vocab_size},
            {"padded_vocab", c.padded_vocab}};
  }
  std::unique_ptr<CpuModel> NewCpuModel(int B, int T) const override {
    return std::make_unique<Gpt2>(layout_, B, T);
  }
  int64_t PoisonOffset() const override { return layout_.at("ln_f.bias").offset; }
  const ParameterLayout* gpt2() const override { return &layout_; }

 private:
  ParameterLayout layout_;
};

class ApertusArchitecture final : public Architecture {
 public:
  ApertusArchitecture(const ApertusConfig& config, int64_t seq_len)
      : layout_(config), seq_len_(seq_len) {}

  ModelArch arch() const override { return ModelArch::kApertus; }
  const std::vector<TensorView>& tensors() const override { return layout_.tensors(); }
  int64_t total() const override { return layout_.total(); }
  std::vector<std::vector<Segment>> GradientGroups() const override {
    return ApertusGradientGroups(layout_);
  }
  void Init(std::span<float> params, uint64_t seed) const override {
    InitApertus(layout_, params, seed);
  }
  nlohmann::json Config() const override { return ApertusRecord(layout_.config(), seq_len_); }
  std::unique_ptr<CpuModel> NewCpuModel(int B, int T) const override {
    return std::make_unique<ApertusModel>(layout_, B, T);
  }
  int64_t PoisonOffset() const override { return layout_.at("final_norm.weight").offset; }
  const ApertusLayout* apertus() const override { return &layout_; }

 private:
  ApertusLayout layout_;
  int64_t seq_len_;
};

}  // namespace

absl::StatusOr<ApertusConfig> ApertusConfigFromSpec(const CampaignSpec& spec) {
  const ModelSpec& m = spec.model;
  ApertusConfig c;
  c.vocab_size = static_cast<int>(m.vocab_size);
  c.n_layer = static_cast<int>(m.n_layer);
  c.d_model = static_cast<int>(m.d_model);
  c.n_head = static_cast<int>(m.n_head);
  c.n_kv_head = static_cast<int>(m.kv_heads());
  c.d_ff = static_cast<int>(m.d_ff);
  c.rope = kernels::cpu::RopeParams{.theta = m.rope_theta};
  if (m.rope_scaling) {
    c.rope.factor = m.rope_scaling->factor;
    c.rope.low_freq_factor = m.rope_scaling->low_freq_factor;
    c.rope.high_freq_factor = m.rope_scaling->high_freq_factor;
    c.rope.original_context = static_cast<double>(m.rope_scaling->original_context);
  }
  c.qk_norm = m.qk_norm;
  c.activation = m.activation;
  c.tie_embeddings = m.tie_embeddings;
  c.norm_eps = static_cast<float>(m.norm_eps);
  c.eod_token = spec.data.document_masking ? static_cast<int32_t>(spec.data.eod_token) : -1;
  if (std::string why = c.Invalid(); !why.empty()) {
    return absl::InvalidArgumentError(Cat("model: not an Apertus model: ", why));
  }
  return c;
}

absl::StatusOr<std::unique_ptr<const Architecture>> Architecture::FromSpec(
    const CampaignSpec& spec) {
  switch (spec.model.arch) {
    case ModelArch::kGpt2:
      return std::make_unique<const Gpt2Architecture>(Gpt2Config::FromSpec(spec.model));
    case ModelArch::kApertus: {
      absl::StatusOr<ApertusConfig> c = ApertusConfigFromSpec(spec);
      if (!c.ok()) return c.status();
      return std::make_unique<const ApertusArchitecture>(*c, spec.model.seq_len);
    }
  }
  return absl::InvalidArgumentError("model.arch: unknown architecture");
}

nlohmann::json ApertusRecord(const ApertusConfig& c, int64_t max_seq_len) {
  nlohmann::json scaling = nullptr;
  if (c.rope.factor != 1.0) {
    scaling = {{"factor", c.rope.factor},
               {"low_freq_factor", c.rope.low_freq_factor},
               {"high_freq_factor", c.rope.high_freq_factor},
               {"original_context", c.rope.original_context}};
  }
  return {{"arch", "apertus"},
          {"n_layer", c.n_layer},
          {"n_head", c.n_head},
          {"n_kv_head", c.n_kv_head},
          {"d_model", c.d_model},
          {"d_ff", c.d_ff},
          {"vocab_size", c.vocab_size},
          {"padded_vocab", c.padded_vocab()},
          {"max_seq_len", max_seq_len},
          {"rope_theta", c.rope.theta},
          {"rope_scaling", scaling},
          {"qk_norm", c.qk_norm},
          {"activation", ToString(c.activation)},
          {"tie_embeddings", c.tie_embeddings},
          {"norm_eps", c.norm_eps},
          {"eod_token", c.eod_token}};
}

nlohmann::json NormalizedConfig(nlohmann::json config) {
  if (config.is_object() && !config.contains("arch")) config["arch"] = "gpt2";
  // RoPE has no table of positions: an Apertus checkpoint loads at any context length (a
  // campaign may lengthen it in a later phase).
  if (config.is_object() && config["arch"] == "apertus") config.erase("max_seq_len");
  return config;
}

}  // namespace belay::model

// Apertus: pre-RMSNorm blocks with GQA attention (QK-norm, RoPE, document mask) and a
// non-gated xIELU MLP (or SwiGLU / GELU), untied embedding and LM head, no biases.
#include "worker/model/apertus.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "common/rng.h"
#include "kernels/xielu.h"

namespace belay::model {

namespace k = belay::kernels::cpu;

namespace {
size_t Z(int64_t v) { return static_cast<size_t>(v); }
int MlpUpRows(const ApertusConfig& c) {
  return c.activation == MlpActivation::kSwiglu ? 2 * c.d_ff : c.d_ff;
}
}  // namespace

std::string ApertusConfig::Invalid() const {
  if (vocab_size <= 0 || n_layer <= 0 || d_model <= 0 || n_head <= 0 || n_kv_head <= 0 ||
      d_ff <= 0) {
    return "sizes must be positive";
  }
  if (d_model % n_head != 0) return "n_head must divide d_model";
  if (head_size() % 2 != 0) return "the head size must be even (RoPE)";
  if (n_head % n_kv_head != 0) return "n_kv_head must divide n_head";
  if (eod_token >= vocab_size) return "eod_token must be a token of the vocabulary";
  if (!(norm_eps > 0)) return "norm_eps must be positive";
  return "";
}

ApertusLayout::ApertusLayout(const ApertusConfig& config) : config_(config) {
  if (std::string why = config.Invalid(); !why.empty()) {
    std::cerr << "ApertusLayout: invalid config: " << why << "\n";
    std::abort();
  }
  const int64_t L = config.n_layer, C = config.d_model, Vp = config.padded_vocab();
  const int64_t hs = config.head_size(), F = config.d_ff;
  const int64_t W = int64_t{config.n_head + 2 * config.n_kv_head} * hs;
  auto add = [this](ApertusTensor kind, std::string name, std::vector<int64_t> shape, bool decay,
                    bool resid) {
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    tensors_.push_back(TensorView{std::move(name), std::move(shape), total_, size, decay, resid});
    kinds_.push_back(kind);
    total_ += size;
  };
  using A = ApertusTensor;
  add(A::kEmbed, "embed.weight", {Vp, C}, true, false);
  add(A::kAttnNorm, "h.attn_norm.weight", {L, C}, false, false);
  add(A::kQkv, "h.attn.qkv.weight", {L, W, C}, true, false);
  if (config.qk_norm) {
    add(A::kQNorm, "h.attn.q_norm.weight", {L, hs}, false, false);
    add(A::kKNorm, "h.attn.k_norm.weight", {L, hs}, false, false);
  }
  add(A::kAttnProj, "h.attn.proj.weight", {L, C, config.n_head * hs}, true, true);
  add(A::kMlpNorm, "h.mlp_norm.weight", {L, C}, false, false);
  add(A::kMlpUp, "h.mlp.up.weight", {L, MlpUpRows(config), C}, true, false);
  if (config.activation == MlpActivation::kXielu) {
    add(A::kXieluAp, "h.mlp.act.a_p", {L}, false, false);
    add(A::kXieluAn, "h.mlp.act.a_n", {L}, false, false);
  }
  add(A::kMlpDown, "h.mlp.down.weight", {L, C, F}, true, true);
  add(A::kFinalNorm, "final_norm.weight", {C}, false, false);
  if (!config.tie_embeddings) add(A::kLmHead, "lm_head.weight", {Vp, C}, true, false);
}

int64_t ApertusLayout::NonEmbeddingParameters() const {
  int64_t n = total_;
  const int64_t C = config_.d_model;
  n -= int64_t{config_.padded_vocab()} * C;  // the input embedding
  // Padded head rows are never computed with; the head of a tied model is the embedding,
  // whose real rows the head does use.
  if (config_.tie_embeddings) {
    n += int64_t{config_.vocab_size} * C;
  } else {
    n -= int64_t{config_.padded_vocab() - config_.vocab_size} * C;
  }
  return n;
}

const TensorView& ApertusLayout::at(std::string_view name) const {
  for (const TensorView& t : tensors_) {
    if (t.name == name) return t;
  }
  std::cerr << "ApertusLayout: no tensor named " << name << "\n";
  std::abort();
}

template <typename T>
T* ApertusLayout::Views<T>::*ApertusLayout::Field(ApertusTensor kind) {
  using V = Views<T>;
  static constexpr T* V::*kFields[] = {&V::embed,    &V::attn_norm, &V::qkv,      &V::q_norm,
                                       &V::k_norm,   &V::attn_proj, &V::mlp_norm, &V::mlp_up,
                                       &V::xielu_ap, &V::xielu_an,  &V::mlp_down, &V::final_norm,
                                       &V::lm_head};
  static_assert(std::size(kFields) == static_cast<size_t>(ApertusTensor::kCount));
  return kFields[static_cast<size_t>(kind)];
}

template <typename T>
ApertusLayout::Views<T> ApertusLayout::Bind(T* flat) const {
  Views<T> v{};
  for (size_t i = 0; i < tensors_.size(); ++i) v.*Field<T>(kinds_[i]) = flat + tensors_[i].offset;
  return v;
}
template ApertusLayout::Views<float> ApertusLayout::Bind(float*) const;
template ApertusLayout::Views<const float> ApertusLayout::Bind(const float*) const;

std::vector<std::vector<Segment>> ApertusGradientGroups(const ApertusLayout& layout) {
  const std::vector<TensorView>& t = layout.tensors();
  const int L = layout.config().n_layer;
  std::vector<std::vector<Segment>> groups(static_cast<size_t>(L) + 2);
  for (size_t i = 0; i < t.size(); ++i) {
    const ApertusTensor kind = layout.kind(i);
    const int index = static_cast<int>(i);
    if (kind == ApertusTensor::kFinalNorm || kind == ApertusTensor::kLmHead) {
      groups[0].push_back({index, t[i].offset, t[i].size});
    } else if (kind == ApertusTensor::kEmbed) {
      groups[Z(L) + 1].push_back({index, t[i].offset, t[i].size});
    }
  }
  for (int l = L - 1; l >= 0; --l) {
    std::vector<Segment>& layer = groups[Z(L - l)];
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].name.starts_with("h.")) continue;
      const int64_t slice = t[i].size / L;
      layer.push_back({static_cast<int>(i), t[i].offset + l * slice, slice});
    }
  }
  return groups;
}

ApertusLayout::Views<float> ApertusLayout::ViewsOf(std::span<float* const> pointers) const {
  Views<float> v{};
  for (size_t i = 0; i < pointers.size(); ++i) v.*Field<float>(kinds_[i]) = pointers[i];
  return v;
}

void InitApertus(const ApertusLayout& layout, std::span<float> params, uint64_t seed) {
  const ApertusConfig& c = layout.config();
  const double resid_std = 0.02 / std::sqrt(2.0 * c.n_layer);
  uint64_t tensor_index = 0;
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const TensorView& t = layout.tensors()[i];
    float* p = params.data() + t.offset;
    // Each tensor draws from its own stream so adding a tensor does not shift the others.
    SplitMix64 rng(seed ^ (0x9e3779b97f4a7c15ULL * ++tensor_index));
    float fill = 1.0f;  // RMSNorm weights
    if (layout.kind(i) == ApertusTensor::kXieluAp) fill = k::XieluRawAlphaP(0.8f);
    if (layout.kind(i) == ApertusTensor::kXieluAn) fill = k::XieluRawAlphaN(0.8f);
    if (t.decay) {
      const double std = t.residual_proj ? resid_std : 0.02;
      for (int64_t j = 0; j < t.size; ++j) p[j] = static_cast<float>(std * rng.Normal());
    } else {
      std::fill(p, p + t.size, fill);
    }
    const ApertusTensor kind = layout.kind(i);
    if (kind == ApertusTensor::kEmbed || kind == ApertusTensor::kLmHead) {
      std::fill(p + int64_t{c.vocab_size} * c.d_model, p + t.size, 0.0f);
    }
  }
}

void ApertusLossMask(uint8_t* out, const int32_t* inputs, const uint8_t* mask, int64_t n,
                     int32_t eod_token) {
  for (int64_t i = 0; i < n; ++i) {
    const bool counted = mask == nullptr || mask[i] != 0;
    out[i] = counted && !(eod_token >= 0 && inputs[i] == eod_token) ? 1 : 0;
  }
}

double ApertusFlopsPerToken(const ApertusLayout& layout, int64_t seq) {
  const ApertusConfig& c = layout.config();
  const double attention = 12.0 * c.n_layer * static_cast<double>(seq) * c.n_head * c.head_size();
  return 6.0 * static_cast<double>(layout.NonEmbeddingParameters()) + attention;
}

}  // namespace belay::model

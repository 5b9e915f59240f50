// GPT-2 parameter layout and initialisation.
#include "worker/model/params.h"

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <iterator>

#include "common/rng.h"

namespace belay::model {

Gpt2Config Gpt2Config::FromSpec(const ModelSpec& m) {
  Gpt2Config c;
  c.n_layer = static_cast<int>(m.n_layer);
  c.n_head = static_cast<int>(m.n_head);
  c.d_model = static_cast<int>(m.d_model);
  c.max_seq_len = static_cast<int>(m.seq_len);
  c.vocab_size = static_cast<int>(m.vocab_size);
  c.padded_vocab = (c.vocab_size + 127) / 128 * 128;
  return c;
}

ParameterLayout::ParameterLayout(const Gpt2Config& config) : config_(config) {
  const int64_t L = config.n_layer, C = config.d_model, Vp = config.padded_vocab;
  const int64_t T = config.max_seq_len;
  auto add = [this](std::string name, std::vector<int64_t> shape, bool decay, bool resid) {
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    tensors_.push_back(TensorView{std::move(name), std::move(shape), total_, size, decay, resid});
    total_ += size;
  };
  // Order matters: Bind() and checkpoints rely on it.
  add("wte", {Vp, C}, true, false);
  add("wpe", {T, C}, true, false);
  add("h.ln_1.weight", {L, C}, false, false);
  add("h.ln_1.bias", {L, C}, false, false);
  add("h.attn.c_attn.weight", {L, 3 * C, C}, true, false);
  add("h.attn.c_attn.bias", {L, 3 * C}, false, false);
  add("h.attn.c_proj.weight", {L, C, C}, true, true);
  add("h.attn.c_proj.bias", {L, C}, false, false);
  add("h.ln_2.weight", {L, C}, false, false);
  add("h.ln_2.bias", {L, C}, false, false);
  add("h.mlp.c_fc.weight", {L, 4 * C, C}, true, false);
  add("h.mlp.c_fc.bias", {L, 4 * C}, false, false);
  add("h.mlp.c_proj.weight", {L, C, 4 * C}, true, true);
  add("h.mlp.c_proj.bias", {L, C}, false, false);
  add("ln_f.weight", {C}, false, false);
  add("ln_f.bias", {C}, false, false);
}

const TensorView& ParameterLayout::at(std::string_view name) const {
  for (const TensorView& t : tensors_) {
    if (t.name == name) return t;
  }
  std::cerr << "ParameterLayout: no tensor named " << name << "\n";
  std::abort();
}

template <typename T>
static ParameterLayout::Views<T> BindImpl(const std::vector<TensorView>& t, T* flat) {
  return {flat + t[0].offset,  flat + t[1].offset,  flat + t[2].offset,  flat + t[3].offset,
          flat + t[4].offset,  flat + t[5].offset,  flat + t[6].offset,  flat + t[7].offset,
          flat + t[8].offset,  flat + t[9].offset,  flat + t[10].offset, flat + t[11].offset,
          flat + t[12].offset, flat + t[13].offset, flat + t[14].offset, flat + t[15].offset};
}

ParameterLayout::Views<float> ParameterLayout::Bind(float* flat) const {
  return BindImpl(tensors_, flat);
}
ParameterLayout::Views<const float> ParameterLayout::Bind(const float* flat) const {
  return BindImpl(tensors_, flat);
}

template <typename T>
T* ParameterLayout::Views<T>::*ParameterLayout::Field(size_t index) {
  using V = Views<T>;
  static constexpr T* V::*kFields[] = {
      &V::wte,  &V::wpe,  &V::ln1w, &V::ln1b, &V::qkvw,    &V::qkvb,    &V::attprojw, &V::attprojb,
      &V::ln2w, &V::ln2b, &V::fcw,  &V::fcb,  &V::fcprojw, &V::fcprojb, &V::lnfw,     &V::lnfb};
  static_assert(std::size(kFields) == 16);
  return kFields[index];
}
template float* ParameterLayout::Views<float>::*ParameterLayout::Field<float>(size_t);
template const float* ParameterLayout::Views<const float>::*ParameterLayout::Field<const float>(
    size_t);

std::vector<std::vector<Segment>> GradientGroups(const ParameterLayout& layout) {
  const std::vector<TensorView>& t = layout.tensors();
  const int L = layout.config().n_layer;
  std::vector<std::vector<Segment>> groups;
  std::vector<Segment> final_norm;
  std::vector<Segment> embeddings;
  for (size_t i = 0; i < t.size(); ++i) {
    const TensorView& v = t[i];
    if (v.name.starts_with("ln_f.")) final_norm.push_back({static_cast<int>(i), v.offset, v.size});
    if (v.name == "wte" || v.name == "wpe") {
      embeddings.push_back({static_cast<int>(i), v.offset, v.size});
    }
  }
  groups.push_back(std::move(final_norm));
  for (int l = L - 1; l >= 0; --l) {
    std::vector<Segment> layer;
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].name.starts_with("h.")) continue;
      const int64_t slice = t[i].size / L;
      layer.push_back({static_cast<int>(i), t[i].offset + l * slice, slice});
    }
    groups.push_back(std::move(layer));
  }
  groups.push_back(std::move(embeddings));
  return groups;
}

ParameterLayout::Views<float> ParameterLayout::ViewsOf(std::span<float* const> pointers) {
  Views<float> v{};
  for (size_t i = 0; i < pointers.size(); ++i) v.*Field<float>(i) = pointers[i];
  return v;
}

void PointAtFlat(const std::vector<Segment>& segments, float* flat, std::span<float*> into) {
  std::fill(into.begin(), into.end(), nullptr);
  for (const Segment& s : segments) into[static_cast<size_t>(s.tensor)] = flat + s.offset;
}

void PointAtPacked(const std::vector<Segment>& segments, float* base, std::span<float*> into) {
  std::fill(into.begin(), into.end(), nullptr);
  int64_t at = 0;
  for (const Segment& s : segments) {
    into[static_cast<size_t>(s.tensor)] = base + at;
    at += s.size;
  }
}

void InitGpt2(const ParameterLayout& layout, std::span<float> params, uint64_t seed) {
  const Gpt2Config& c = layout.config();
  const double resid_std = 0.02 / std::sqrt(2.0 * c.n_layer);
  // Each tensor draws from its own stream so adding a tensor does not shift the others.
  uint64_t tensor_index = 0;
  for (const TensorView& t : layout.tensors()) {
    float* p = params.data() + t.offset;
    SplitMix64 rng(seed ^ (0x5bd1e995ULL * ++tensor_index));
    bool is_ln_weight =
        t.name.find("ln_") != std::string::npos && t.name.find(".weight") != std::string::npos;
    if (is_ln_weight) {
      for (int64_t i = 0; i < t.size; ++i) p[i] = 1.0f;
    } else if (!t.decay) {
      for (int64_t i = 0; i < t.size; ++i) p[i] = 0.0f;  // biases
    } else {
      double std = t.residual_proj ? resid_std : 0.02;
      for (int64_t i = 0; i < t.size; ++i) p[i] = static_cast<float>(std * rng.Normal());
    }
  }
  // Padded vocabulary rows are never looked up or predicted; keep them 0.
  const TensorView& wte = layout.at("wte");
  for (int64_t i = int64_t{c.vocab_size} * c.d_model; i < wte.size; ++i) {
    params[static_cast<size_t>(wte.offset + i)] = 0.0f;
  }
}

}  // namespace belay::model

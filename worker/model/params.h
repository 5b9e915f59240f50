// GPT-2 parameters: one flat fp32 buffer with named tensor views, and their initialisation.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/campaign_spec.h"

namespace belay::model {

struct Gpt2Config {
  int n_layer = 0;
  int n_head = 0;
  int d_model = 0;       // C
  int max_seq_len = 0;   // rows of the position embedding
  int vocab_size = 0;    // V: real tokens
  int padded_vocab = 0;  // Vp: V rounded up to a multiple of 128; rows V..Vp-1 are never predicted

  static Gpt2Config FromSpec(const ModelSpec& m);
  bool operator==(const Gpt2Config&) const = default;
};

// One parameter tensor inside the flat buffer. Layered tensors hold all layers, layer-major.
struct TensorView {
  std::string name;            // e.g. "wte", "h.attn.qkv.weight"
  std::vector<int64_t> shape;  // logical shape, e.g. {L, 3C, C}
  int64_t offset = 0;          // first element in the flat buffer
  int64_t size = 0;            // elements
  bool decay = false;          // weight decay applies (matrices and embeddings, not biases/LN)
  bool residual_proj = false;  // output projection into the residual stream (scaled init)
};

class ParameterLayout {
 public:
  explicit ParameterLayout(const Gpt2Config& config);

  const Gpt2Config& config() const { return config_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  int64_t total() const { return total_; }
  // The tensor of that name; aborts on an unknown name (a programming error).
  const TensorView& at(std::string_view name) const;

  // Named pointers into a flat buffer laid out by this layout.
  template <typename T>
  struct Views {
    T *wte, *wpe, *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb,
        *fcprojw, *fcprojb, *lnfw, *lnfb;
  };
  Views<float> Bind(float* flat) const;
  Views<const float> Bind(const float* flat) const;

  // The field of Views that holds tensor `index` (tensors() order is the order of the fields).
  template <typename T>
  static T* Views<T>::*Field(size_t index);
  // The named views of per-tensor pointers (tensors() order), as BackwardHook passes them.
  static Views<float> ViewsOf(std::span<float* const> pointers);

 private:
  Gpt2Config config_;
  std::vector<TensorView> tensors_;
  int64_t total_ = 0;
};

// A run of a tensor's elements inside the flat buffer.
struct Segment {
  int tensor = 0;      // index into ParameterLayout::tensors()
  int64_t offset = 0;  // first element in the flat buffer
  int64_t size = 0;    // elements
  bool operator==(const Segment&) const = default;
};

// The parameters whose gradients Gpt2::Backward completes together, numbered in the order it
// completes them:
//   0            ln_f (weight, bias)
//   1 … L        layer L−1 … layer 0: that layer's slice of every h.* tensor
//   L + 1        the embeddings wte and wpe (wte also collects the output head's gradient,
//                which Backward computes first, so this group is open for the whole pass)
// Every parameter is in exactly one group; segments are in tensor order.
std::vector<std::vector<Segment>> GradientGroups(const ParameterLayout& layout);

// Where a backward pass writes gradients, whatever the architecture: one pointer per tensor
// of the layout (in its tensors() order). For each segment of a gradient group, its tensor's
// entry points at the segment's gradient (a layer slice: that layer's slice); null for the
// tensors not in the group.
//
// PointAtFlat: the segments' places in a buffer laid out like the parameters. PointAtPacked:
// the segments laid out one after another from `base`, in segment order (a ZeRO staging
// buffer). Both clear the other entries.
void PointAtFlat(const std::vector<Segment>& segments, float* flat, std::span<float*> into);
void PointAtPacked(const std::vector<Segment>& segments, float* base, std::span<float*> into);

// GPT-2 initialisation from `seed`: weights N(0, 0.02), residual projections
// N(0, 0.02 / sqrt(2·n_layer)), biases 0, LayerNorm weights 1, padded vocabulary rows 0.
// Depends only on the layout and the seed (a portable generator, not std::normal_distribution).
void InitGpt2(const ParameterLayout& layout, std::span<float> params, uint64_t seed);

}  // namespace belay::model

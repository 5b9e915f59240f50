// The model a campaign trains, whatever its architecture (model.arch): what the trainer, the
// ZeRO shard plan and checkpoints need to know of it, and its CPU forward and backward.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/campaign_spec.h"
#include "nlohmann/json.hpp"
#include "worker/model/apertus.h"
#include "worker/model/cpu_model.h"
#include "worker/model/params.h"

namespace belay::model {

class Architecture {
 public:
  virtual ~Architecture() = default;

  // The model of `spec` (model.arch and its shape; data.document_masking's end-of-document
  // token for Apertus). InvalidArgument for a shape the architecture cannot build (the
  // campaign-file parser refuses those first).
  static absl::StatusOr<std::unique_ptr<const Architecture>> FromSpec(const CampaignSpec& spec);

  virtual ModelArch arch() const = 0;
  // The flat fp32 parameter buffer: its tensors in order, and its size.
  virtual const std::vector<TensorView>& tensors() const = 0;
  virtual int64_t total() const = 0;
  // The gradient groups backward completes, in the order it completes them (BackwardHook).
  virtual std::vector<std::vector<Segment>> GradientGroups() const = 0;
  // The seeded initialisation; depends only on the shape and the seed.
  virtual void Init(std::span<float> params, uint64_t seed) const = 0;
  // What a checkpoint records of the model: "arch" and every number of its shape. A
  // checkpoint loads only into a model of the same record.
  virtual nlohmann::json Config() const = 0;
  // The model for micro-batches of B×T tokens on the CPU.
  virtual std::unique_ptr<CpuModel> NewCpuModel(int B, int T) const = 0;
  // A parameter whose value NaN makes every loss NaN (the final norm's), for fault injection.
  virtual int64_t PoisonOffset() const = 0;

  // The architecture's own layout, for code that is specific to it (the GPU model is GPT-2's
  // only); null for the other architecture.
  virtual const ParameterLayout* gpt2() const { return nullptr; }
  virtual const ApertusLayout* apertus() const { return nullptr; }
};

// The Apertus model of `spec` (its model section; data.document_masking's end-of-document
// token), as the trainer builds it and `belay plan` counts it. InvalidArgument when the shape
// is not one ApertusModel takes.
absl::StatusOr<ApertusConfig> ApertusConfigFromSpec(const CampaignSpec& spec);

// The model record of an Apertus checkpoint (what Architecture::Config gives for it) of a
// model trained at context length max_seq_len.
nlohmann::json ApertusRecord(const ApertusConfig& c, int64_t max_seq_len);

// A checkpoint's model record (Architecture::Config) as it is compared: records written
// before architectures were recorded are GPT-2's, so a record without "arch" gets "gpt2".
nlohmann::json NormalizedConfig(nlohmann::json config);

}  // namespace belay::model

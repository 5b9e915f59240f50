// What a campaign asks of each rank, from its spec alone (`belay plan`): parameters, model
// FLOPs per token, tokens per step, and the memory one rank holds under each ZeRO stage, as
// the trainer allocates it. On CPUs every figure is what the trainer and the model classes
// allocate; on GPUs the activations are an estimate, and so are Apertus and AdEMAMix ranks,
// which the GPU trainer does not have yet (docs/trainer.md, "Memory per rank").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/campaign_spec.h"
#include "worker/model/apertus.h"
#include "worker/model/params.h"

namespace belay::train {

// Bytes one rank holds, by what they are for. CPU ranks: host memory; GPU ranks: device
// memory.
struct RankBytes {
  // CPU: the fp32 parameters, whole on every rank. GPU: the bf16 working copy, whole, and
  // the fp32 master weights (whole at stage 0, the shard at stages 1 and 2).
  int64_t weights = 0;
  // The gradient buffers Trainer::memory() counts: stage 0 the whole gradient; stage 1 the
  // whole gradient and the summed shard (GPU: and its two staging slots); stage 2 the shard,
  // the embeddings' bucket and two buffers of the largest other bucket.
  int64_t gradients = 0;
  // fp32 optimizer states (AdamW 2, AdEMAMix 3 per element): whole at stage 0, the shard
  // (padding included) at stages 1 and 2.
  int64_t optimizer = 0;
  // The model's activations and scratch for one micro-batch (CPU: what model::Gpt2 or
  // model::ApertusModel allocates).
  int64_t activations = 0;
  // CPU: the step's tokens and masks, the checkpoint gather's bucket and (stage 1) the two
  // reduce-scatter staging buffers. GPU: the micro-batch's tokens and masks on the device.
  int64_t buffers = 0;
  // Asynchronous checkpoints (CPU): the copy of what the rank owns (parameters and optimizer
  // states), held from a save step until the next step ends. 0 on GPUs (host memory there).
  int64_t save_copy = 0;

  int64_t total() const {
    return weights + gradients + optimizer + activations + buffers + save_copy;
  }
  bool operator==(const RankBytes&) const = default;
};

struct TrainingPlan {
  ModelArch arch = ModelArch::kGpt2;
  bool gpu = false;             // resources.gpus_per_node > 0: bf16 on the GPU
  int64_t parameters = 0;       // every element of the flat buffer, padded vocabulary included
  int64_t non_embedding = 0;    // GPT-2: without wte and wpe; Apertus: without the input
                                // embedding (the LM head counts; ApertusLayout's count)
  double flops_per_token = 0;   // forward + backward, as MFU counts it
  int64_t tokens_per_step = 0;  // global_batch × seq_len
  int64_t world_size = 1;
  int64_t grad_accum_steps = 1;  // micro-batches per rank per step
  int zero_stage = 0;
  OptimizerKind optimizer = OptimizerKind::kAdamW;
  int optimizer_states = 2;
  int64_t shard_elements = 0;       // ShardPlan::shard_size at this world size
  bool fused_attention = false;     // GPU: the attention kernel keeps no T×T weights
  std::array<RankBytes, 3> stages;  // per rank, under ZeRO stages 0, 1 and 2
  // Parts of the figures that are estimates rather than what the code allocates, and what
  // they leave out; empty when every figure is exact.
  std::vector<std::string> estimates;

  const RankBytes& memory() const { return stages[static_cast<size_t>(zero_stage)]; }
};

// The plan of a validated campaign. InvalidArgument when the model's shape is not one the
// model classes take, or the global batch does not divide over micro_batch × world size.
absl::StatusOr<TrainingPlan> PlanTraining(const CampaignSpec& spec);

// The pieces PlanTraining is made of, for tests that check them against the code.

// Model FLOPs per token of GPT-2, as llm.c and bench/gpu_train_bench count them for MFU:
// 6 per parameter (all of them) + 6·L·C·seq for attention.
double Gpt2FlopsPerToken(const model::ParameterLayout& layout, int64_t seq);
// Bytes model::Gpt2 / model::ApertusModel allocate for a B×T micro-batch.
int64_t Gpt2ActivationBytes(const model::Gpt2Config& c, int64_t B, int64_t T);
int64_t ApertusActivationBytes(const model::ApertusConfig& c, int64_t B, int64_t T);

// Device memory of GPUs by name, as the vendor states it (a card reports a little less, and
// the CUDA context and NCCL take some of that).
struct NamedGpu {
  std::string_view name;
  int64_t bytes = 0;
  std::string_view note;
};
std::span<const NamedGpu> KnownGpus();
std::optional<int64_t> GpuMemoryBytes(std::string_view name);

// "64GiB", "80 GB", "512M", "1.5TiB", "1073741824": binary units (K, M, G, T with or without
// "iB"; KiB = 1024) and decimal ones (KB, MB, GB, TB = 10^3…). InvalidArgument otherwise.
absl::StatusOr<int64_t> ParseByteSize(std::string_view text);
// "1.50 GiB", "512 B": binary units, three significant digits.
std::string FormatBytes(int64_t bytes);

}  // namespace belay::train

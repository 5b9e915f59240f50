// The figures of `belay plan`, from the same rules the trainer allocates by: the shard plan
// (shard_plan.h), the gradient buffers of each stage (gradient_device.cc), the optimizer's
// states, the model classes' buffers and the trainer's own (trainer.cc, checkpoint_io.cc).
#include "worker/train/training_plan.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <utility>

#include "common/strings.h"
#include "worker/train/shard_plan.h"

namespace belay::train {
namespace {

constexpr int64_t kFp32 = 4;
constexpr int64_t kBf16 = 2;
constexpr int64_t kInt32 = 4;

// What the memory figures need of a model.
struct ModelShape {
  int64_t parameters = 0;
  std::vector<std::vector<model::Segment>> groups;  // gradient groups, backward order
  int64_t activations = 0;                          // on the rank's device, one micro-batch
  bool fused_attention = false;
};

int64_t LargestPadded(const std::vector<Bucket>& buckets, size_t count) {
  int64_t n = 0;
  for (size_t b = 0; b < count; ++b) n = std::max(n, buckets[b].padded);
  return n;
}

// What rank 0 owns (the most of any rank: the padding falls to the last ones).
int64_t OwnedByRankZero(const ShardPlan& plan) {
  int64_t n = 0;
  for (const OwnedPiece& p : plan.Owned(0)) n += p.size;
  return n;
}

// A CPU rank: HostGradients, optim::AdamW (or AdEMAMix's three states), the trainer's batch
// and gather buffers, and CheckpointIo's copy for asynchronous saves.
RankBytes CpuRank(const CampaignSpec& spec, const ShardPlan& plan, const ModelShape& m, int stage,
                  int states, int64_t accum) {
  const std::vector<Bucket>& buckets = plan.buckets();
  const int64_t P = m.parameters, S = plan.shard_size();
  const int64_t largest = LargestPadded(buckets, buckets.size());
  RankBytes r;
  r.weights = kFp32 * P;
  if (stage == 0) r.gradients = kFp32 * P;
  if (stage == 1) r.gradients = kFp32 * (P + S);
  if (stage == 2) {
    r.gradients =
        kFp32 * (S + buckets.back().padded + 2 * LargestPadded(buckets, buckets.size() - 1));
  }
  r.optimizer = kFp32 * states * (stage == 0 ? P : S);
  r.activations = m.activations;
  const int64_t tokens = accum * spec.train.micro_batch * spec.model.seq_len;
  const int64_t batch = kInt32 * (accum * spec.train.micro_batch * (spec.model.seq_len + 1)) +
                        2 * kInt32 * tokens + tokens;  // sequences, inputs, targets; masks
  r.buffers = batch + kFp32 * largest + (stage == 1 ? 2 * kFp32 * largest : 0);
  if (spec.checkpoint.async) r.save_copy = kFp32 * (1 + states) * OwnedByRankZero(plan);
  return r;
}

// A GPU rank as CudaGpt2 allocates it: bf16 parameters, fp32 master weights, gradients and
// states; the micro-batch's tokens, masks and bucket indices on the device.
RankBytes GpuRank(const CampaignSpec& spec, const ShardPlan& plan, const ModelShape& m, int stage,
                  int states) {
  const std::vector<Bucket>& buckets = plan.buckets();
  const int64_t P = m.parameters, S = plan.shard_size();
  const int64_t state = stage == 0 ? P : S;
  RankBytes r;
  r.weights = kBf16 * P + kFp32 * state;
  if (stage == 0) r.gradients = kFp32 * P;
  if (stage == 1) r.gradients = kFp32 * (P + S + 2 * LargestPadded(buckets, buckets.size()));
  if (stage == 2) {
    const int64_t ring = (LargestPadded(buckets, buckets.size() - 1) + 63) / 64 * 64;
    r.gradients = kFp32 * (S + buckets.back().padded + 2 * ring);
  }
  r.optimizer = kFp32 * states * state;
  r.activations = m.activations;
  const int64_t N = spec.train.micro_batch * spec.model.seq_len;
  r.buffers = 5 * kInt32 * N + kInt32 + N;  // inputs, targets, 3 bucket index arrays; mask
  return r;
}

// GPT-2 on the GPU: CudaGpt2's activations (bf16, statistics and losses fp32), without the
// float scratch of the bias and LayerNorm backward partials and cuBLASLt's workspace.
int64_t Gpt2GpuActivationBytes(const model::Gpt2Config& c, int64_t B, int64_t T, bool fused) {
  const int64_t L = c.n_layer, C = c.d_model, NH = c.n_head, Vp = c.padded_vocab, N = B * T;
  const int64_t att = B * NH * T * T;
  int64_t bf16 = N * C                                                  // encoded
                 + L * N * (C + 3 * C + C + C + C + 4 * C + 4 * C + C)  // ln1 … residual3
                 + N * C + N * Vp                                       // lnf, logits
                 + N * (3 * C + 3 * C + 4 * C);                         // proj dres dc, d3c, d4c
  int64_t fp32 = L * N * 4 + 2 * N + N;  // LayerNorm statistics; losses
  if (fused) {
    fp32 += L * B * NH * T;  // log-sum-exp per row
  } else {
    bf16 += L * att + std::max(4 * N * C + 2 * att, 7 * N * C + 3 * att);  // weights, scratch
  }
  return kBf16 * bf16 + kFp32 * fp32;
}

// Apertus on the GPU: no GPU model yet. The CPU model's buffers with activations in bf16,
// RMSNorm statistics and losses in fp32, fused attention (a log-sum-exp per row instead of
// the T×T weights) and one logits buffer reused for its gradient.
int64_t ApertusGpuActivationBytes(const model::ApertusConfig& c, int64_t B, int64_t T) {
  const int64_t L = c.n_layer, C = c.d_model, NH = c.n_head, NKV = c.n_kv_head;
  const int64_t hs = c.head_size(), F = c.d_ff, Vp = c.padded_vocab(), N = B * T;
  const int64_t W = (NH + 2 * NKV) * hs;
  const int64_t U = c.activation == model::MlpActivation::kSwiglu ? 2 * F : F;
  const int64_t bf16 = (L + 1) * N * C + L * N * (C + 2 * W + NH * hs + 2 * C + U + F) + N * C +
                       N * Vp + N * (6 * C + F + U + NH * hs + 2 * W);
  const int64_t fp32 = L * N * (2 + NH + NKV) + N + N + L * B * NH * T;
  return kBf16 * bf16 + kFp32 * fp32 + N + 2 * kInt32 * N;  // loss mask, document ids, positions
}

absl::StatusOr<ModelShape> ShapeOf(const CampaignSpec& spec, bool gpu, TrainingPlan& plan) {
  const int64_t B = spec.train.micro_batch, T = spec.model.seq_len;
  ModelShape m;
  if (spec.model.arch == ModelArch::kGpt2) {
    const model::ParameterLayout layout(model::Gpt2Config::FromSpec(spec.model));
    m.parameters = layout.total();
    m.groups = model::GradientGroups(layout);
    plan.non_embedding = layout.total() - layout.at("wte").size - layout.at("wpe").size;
    plan.flops_per_token = Gpt2FlopsPerToken(layout, T);
    const model::Gpt2Config& c = layout.config();
    m.fused_attention = gpu && c.d_model == c.n_head * 64 && T % 64 == 0;
    m.activations =
        gpu ? Gpt2GpuActivationBytes(c, B, T, m.fused_attention) : Gpt2ActivationBytes(c, B, T);
    if (gpu) {
      plan.estimates.push_back(
          "activations leave out the GPU kernels' float scratch (bias and LayerNorm backward "
          "partials) and cuBLASLt's workspace");
    }
    return m;
  }
  absl::StatusOr<model::ApertusConfig> config = ApertusConfigFromSpec(spec.model, spec.data);
  if (!config.ok()) return config.status();
  const model::ApertusLayout layout(*config);
  m.parameters = layout.total();
  m.groups = model::ApertusGradientGroups(layout);
  plan.non_embedding = layout.NonEmbeddingParameters();
  plan.flops_per_token = model::ApertusFlopsPerToken(layout, T);
  m.fused_attention = gpu;
  m.activations =
      gpu ? ApertusGpuActivationBytes(*config, B, T) : ApertusActivationBytes(*config, B, T);
  if (gpu) {
    plan.estimates.push_back(
        "Apertus has no GPU model yet: activations are the CPU model's buffers in bf16 with "
        "fused attention (no T×T weights kept), RMSNorm statistics and losses in fp32");
  }
  return m;
}

}  // namespace

double Gpt2FlopsPerToken(const model::ParameterLayout& layout, int64_t seq) {
  const model::Gpt2Config& c = layout.config();
  return 6.0 * static_cast<double>(layout.total()) +
         6.0 * c.n_layer * static_cast<double>(c.d_model) * static_cast<double>(seq);
}

absl::StatusOr<model::ApertusConfig> ApertusConfigFromSpec(const ModelSpec& m, const DataSpec& d) {
  model::ApertusConfig c;
  c.vocab_size = static_cast<int>(m.vocab_size);
  c.n_layer = static_cast<int>(m.n_layer);
  c.d_model = static_cast<int>(m.d_model);
  c.n_head = static_cast<int>(m.n_head);
  c.n_kv_head = static_cast<int>(m.kv_heads());
  c.d_ff = static_cast<int>(m.d_ff);
  c.rope = {.theta = m.rope_theta, .factor = 1.0};
  if (m.rope_scaling) {
    c.rope.factor = m.rope_scaling->factor;
    c.rope.low_freq_factor = m.rope_scaling->low_freq_factor;
    c.rope.high_freq_factor = m.rope_scaling->high_freq_factor;
    c.rope.original_context = static_cast<double>(m.rope_scaling->original_context);
  }
  c.qk_norm = m.qk_norm;
  c.activation = m.activation == MlpActivation::kSwiglu ? model::MlpActivation::kSwiglu
                 : m.activation == MlpActivation::kGelu ? model::MlpActivation::kGelu
                                                        : model::MlpActivation::kXielu;
  c.tie_embeddings = m.tie_embeddings;
  c.norm_eps = static_cast<float>(m.norm_eps);
  c.eod_token = d.document_masking ? static_cast<int32_t>(d.eod_token) : -1;
  if (std::string why = c.Invalid(); !why.empty()) {
    return absl::InvalidArgumentError(Cat("model: ", why));
  }
  return c;
}

int64_t Gpt2ActivationBytes(const model::Gpt2Config& c, int64_t B, int64_t T) {
  const int64_t L = c.n_layer, C = c.d_model, NH = c.n_head, Vp = c.padded_vocab, N = B * T;
  const int64_t att = B * NH * T * T;
  const int64_t forward = N * C                                  // encoded
                          + L * N * (C + 3 * C + C + C + C + C)  // ln1 qkv atty attproj res2 ln2
                          + L * N * (4 * C + 4 * C + C + C)      // fch fch_gelu fcproj res3
                          + L * N * 4 + L * att                  // LayerNorm statistics; att
                          + N * C + 2 * N + 2 * N * Vp + N;      // lnf; logits probs; losses
  const int64_t backward = N * Vp + N * C * (5 + 8 + 3 + 3 + 1) + att;
  return kFp32 * (forward + backward);
}

int64_t ApertusActivationBytes(const model::ApertusConfig& c, int64_t B, int64_t T) {
  const int64_t L = c.n_layer, C = c.d_model, NH = c.n_head, NKV = c.n_kv_head;
  const int64_t hs = c.head_size(), F = c.d_ff, Vp = c.padded_vocab(), N = B * T;
  const int64_t W = (NH + 2 * NKV) * hs;
  const int64_t U = c.activation == model::MlpActivation::kSwiglu ? 2 * F : F;
  const int64_t att = B * NH * T * T;
  const int64_t forward = (L + 1) * N * C                      // residual stream
                          + L * N * (2 * W + NH * hs + 3 * C)  // qkv(raw) atty; h1 mid h2
                          + L * N * (2 + NH + NKV) + L * att   // RMSNorm statistics; att
                          + L * N * (U + F) + N * C + N + 2 * N * Vp + N;  // up act; hf rstdf …
  const int64_t backward = N * Vp + N * C * 6 + N * (F + U + NH * hs + 2 * W);
  return kFp32 * (forward + backward) + N + 2 * kInt32 * N;  // loss mask, document ids, positions
}

absl::StatusOr<TrainingPlan> PlanTraining(const CampaignSpec& spec) {
  TrainingPlan plan;
  plan.arch = spec.model.arch;
  plan.gpu = spec.resources.gpus_per_node > 0;
  plan.world_size = spec.resources.world_size();
  plan.zero_stage = spec.train.zero_stage;
  plan.optimizer = spec.optimizer.name;
  plan.optimizer_states = spec.optimizer.name == OptimizerKind::kAdemamix ? 3 : 2;
  plan.tokens_per_step = spec.train.global_batch * spec.model.seq_len;
  plan.grad_accum_steps = spec.grad_accum_steps(plan.world_size);
  if (plan.zero_stage < 0 || plan.zero_stage > 2) {
    return absl::InvalidArgumentError(
        Cat("train.zero_stage = ", plan.zero_stage, ": the trainer has stages 0, 1 and 2"));
  }
  if (plan.grad_accum_steps == 0) {
    return absl::InvalidArgumentError(Cat(
        "train.global_batch = ", spec.train.global_batch,
        " does not divide into micro_batch × ranks = ", spec.train.micro_batch * plan.world_size));
  }
  absl::StatusOr<ModelShape> m = ShapeOf(spec, plan.gpu, plan);
  if (!m.ok()) return m.status();
  plan.parameters = m->parameters;
  plan.fused_attention = m->fused_attention;
  const ShardPlan shards(m->groups, static_cast<int>(plan.world_size));
  plan.shard_elements = shards.shard_size();
  for (int stage = 0; stage < 3; ++stage) {
    plan.stages[static_cast<size_t>(stage)] =
        plan.gpu ? GpuRank(spec, shards, *m, stage, plan.optimizer_states)
                 : CpuRank(spec, shards, *m, stage, plan.optimizer_states, plan.grad_accum_steps);
  }
  if (plan.gpu) {
    plan.estimates.push_back(
        "GPU memory leaves out the CUDA context, NCCL's buffers and the allocator's rounding; "
        "host memory (the fp32 parameters and states the trainer keeps for checkpoints) is not "
        "counted");
  }
  return plan;
}

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr std::array<NamedGpu, 6> kGpus = {{
    {"a100-40", 40 * kGiB, "NVIDIA A100 40GB"},
    {"a100-80", 80 * kGiB, "NVIDIA A100 80GB"},
    {"h100", 80 * kGiB, "NVIDIA H100 SXM/PCIe 80GB"},
    {"h200", 141 * kGiB, "NVIDIA H200 141GB"},
    {"gh200", 96 * kGiB, "NVIDIA GH200, the Hopper GPU's 96GB HBM3 (CSCS Alps)"},
    {"gh200-144", 144 * kGiB, "NVIDIA GH200 with 144GB HBM3e"},
}};

}  // namespace

std::span<const NamedGpu> KnownGpus() { return kGpus; }

std::optional<int64_t> GpuMemoryBytes(std::string_view name) {
  for (const NamedGpu& g : kGpus) {
    if (g.name.size() != name.size()) continue;
    if (std::equal(name.begin(), name.end(), g.name.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return g.bytes;
    }
  }
  return std::nullopt;
}

absl::StatusOr<int64_t> ParseByteSize(std::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        Cat("\"", text, "\" is not a memory size; examples: 64GiB, 80G, 512MiB, 96GB, 1073741824"));
  };
  std::string s;
  for (char ch : text) {
    if (ch != ' ') s += ch;
  }
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return bad();
  double value = 0;
  std::string number = s.substr(0, i);
  if (std::count(number.begin(), number.end(), '.') > 1 ||
      std::sscanf(number.c_str(), "%lf", &value) != 1) {
    return bad();
  }
  std::string unit = s.substr(i);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  static constexpr std::array<std::pair<std::string_view, double>, 14> kUnits = {{
      {"", 1},
      {"B", 1},
      {"K", 1024.0},
      {"KIB", 1024.0},
      {"M", 1048576.0},
      {"MIB", 1048576.0},
      {"G", 1073741824.0},
      {"GIB", 1073741824.0},
      {"T", 1099511627776.0},
      {"TIB", 1099511627776.0},
      {"KB", 1e3},
      {"MB", 1e6},
      {"GB", 1e9},
      {"TB", 1e12},
  }};
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    const double bytes = value * scale;
    if (!(bytes >= 1) || bytes > 9e18) return bad();
    return static_cast<int64_t>(std::llround(bytes));
  }
  return bad();
}

std::string FormatBytes(int64_t bytes) {
  static constexpr std::array<std::string_view, 5> kNames = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (u + 1 < kNames.size() && std::abs(v) >= 1024) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return Cat(bytes, " B");
  char out[32];
  std::snprintf(out, sizeof(out), "%.*f %s",
                v >= 100  ? 0
                : v >= 10 ? 1
                          : 2,
                v, std::string(kNames[u]).c_str());
  return out;
}

}  // namespace belay::train

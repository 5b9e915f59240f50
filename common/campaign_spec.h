// The campaign file: TOML parsed into a typed, fully validated CampaignSpec.
//
// Every field, its default and its rules are documented in docs/campaign-spec.md; keep the
// two in step.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace belay {

// One problem in a campaign file. Line and column are 1-based and point at the offending
// value (or key, or table header); `key` is the dotted key path, empty for syntax errors.
struct SpecError {
  std::string file;
  uint32_t line = 1;
  uint32_t column = 1;
  std::string key;
  std::string message;

  // "file:line:column: key: message" (the key part is left out when empty).
  std::string ToString() const;
};

enum class ModelArch { kGpt2, kApertus };
enum class MlpActivation { kXielu, kSwiglu, kGelu };
enum class OptimizerKind { kAdamW, kAdemamix };
enum class DataFormat { kLlmc, kMegatron };
enum class LrSchedule { kCosine, kWsd };
enum class CooldownShape { kLinear, kOneMinusSqrt };
enum class DType { kFp32, kBf16 };
enum class SchedulerKind { kLocal, kSlurm };
enum class NanPolicy { kRollback, kStop };

std::string_view ToString(ModelArch v);
std::string_view ToString(MlpActivation v);
std::string_view ToString(OptimizerKind v);
std::string_view ToString(DataFormat v);
std::string_view ToString(LrSchedule v);
std::string_view ToString(CooldownShape v);
std::string_view ToString(DType v);
std::string_view ToString(SchedulerKind v);
std::string_view ToString(NanPolicy v);

struct CampaignSection {
  std::string name;  // [A-Za-z0-9][A-Za-z0-9._-]{0,63}
  std::string description;

  bool operator==(const CampaignSection&) const = default;
};

// Llama-3 style RoPE frequency scaling (model.rope_scaling).
struct RopeScalingSpec {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_context = 8192;

  bool operator==(const RopeScalingSpec&) const = default;
};

struct ModelSpec {
  ModelArch arch = ModelArch::kGpt2;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t d_model = 0;
  int64_t seq_len = 0;     // tokens per sequence (context length)
  int64_t vocab_size = 0;  // tokens; the model pads it to a multiple of 128

  // Apertus only (arch = "apertus"); a file that sets them for gpt2 is refused.
  int64_t n_kv_head = 0;  // key/value heads (GQA), dividing n_head; 0 (not parsed): n_head
  int64_t d_ff = 0;       // MLP hidden size (SwiGLU: of each of gate and up)
  double rope_theta = 500000.0;
  std::optional<RopeScalingSpec> rope_scaling;  // Llama-3 frequency scaling; nullopt: none
  bool qk_norm = true;
  MlpActivation activation = MlpActivation::kXielu;
  bool tie_embeddings = false;
  double norm_eps = 1e-5;

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }

  bool operator==(const ModelSpec&) const = default;
};

struct DataSpec {
  DataFormat format = DataFormat::kLlmc;
  // Shard globs as absolute paths: relative ones were resolved against the campaign file's
  // directory when it was parsed from a file.
  std::vector<std::string> train;
  std::vector<std::string> val;
  bool shuffle = true;
  // Documents end at eod_token (apertus only): attention never crosses it, positions restart
  // after it, and the loss at its position is masked.
  bool document_masking = false;
  int64_t eod_token = -1;  // set (>= 0, < vocab_size) exactly when document_masking is

  bool operator==(const DataSpec&) const = default;
};

struct GoldfishSpec {
  int64_t k = 0;  // drop 1/k of label positions
  int64_t h = 0;  // hash window in tokens, ending at the label

  bool operator==(const GoldfishSpec&) const = default;
};

struct TrainSpec {
  // Exactly one of the two is set by the file; total_steps() resolves either.
  std::optional<int64_t> total_steps;
  std::optional<int64_t> total_tokens;
  int64_t micro_batch = 0;   // sequences per rank per forward/backward
  int64_t global_batch = 0;  // sequences per optimizer step, over all ranks
  double lr = 0;             // peak learning rate
  LrSchedule lr_schedule = LrSchedule::kCosine;
  int64_t warmup_steps = 0;
  double min_lr = 0;
  int64_t cooldown_steps = 0;  // wsd only
  CooldownShape cooldown = CooldownShape::kLinear;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0 disables clipping
  uint64_t seed = 1234;
  DType dtype = DType::kFp32;  // default: bf16 when resources.gpus_per_node > 0
  int zero_stage = 0;
  std::optional<GoldfishSpec> goldfish;
  int64_t eval_every = 0;  // steps; 0 disables evaluation
  int64_t eval_batches = 20;

  bool operator==(const TrainSpec&) const = default;
};

// [optimizer]: the update rule. Both use train.beta1, train.beta2, train.eps and
// train.weight_decay; AdEMAMix adds a slow EMA of the gradient (beta3) mixed in with weight
// alpha, each warmed up over its own number of steps (0: none).
struct OptimizerSpec {
  OptimizerKind name = OptimizerKind::kAdamW;
  double beta3 = 0.9999;
  double alpha = 8.0;
  int64_t alpha_warmup_steps = 0;
  int64_t beta3_warmup_steps = 0;

  bool operator==(const OptimizerSpec&) const = default;
};

struct CheckpointSpec {
  std::string dir;                     // absolute when parsed from a file
  std::optional<int64_t> every_steps;  // nullopt: "auto" (Young/Daly)
  int64_t keep_last = 3;
  int64_t keep_every = 0;  // 0: no permanent checkpoints
  bool async = true;

  bool operator==(const CheckpointSpec&) const = default;
};

struct BackoffSpec {
  std::chrono::seconds initial{30};
  std::chrono::seconds max{600};
  double jitter = 0.2;  // fraction of the delay, drawn uniformly in [-jitter, +jitter]

  bool operator==(const BackoffSpec&) const = default;
};

struct ResourcesSpec {
  SchedulerKind scheduler = SchedulerKind::kLocal;
  int64_t nodes = 1;
  // Fewest nodes an attempt may run on when belay knows fewer usable ones (Slurm). A parsed
  // spec without the key has min_nodes = nodes (never shrink); 0 (not parsed) means the same.
  int64_t min_nodes = 0;
  int64_t ranks_per_node = 1;
  int64_t gpus_per_node = 0;
  std::string partition;
  std::string account;
  std::optional<std::chrono::seconds> time_limit;  // nullopt: the partition's default
  std::vector<std::string> sbatch_options;         // each one ParseSbatchOption accepts
  bool presubmit = false;
  // SIGUSR1 this long before the time limit (Slurm; the local scheduler has no time limit).
  std::chrono::seconds pre_limit_signal{600};

  int64_t world_size() const { return nodes * ranks_per_node; }
  int64_t min_nodes_or_nodes() const { return min_nodes > 0 ? min_nodes : nodes; }

  bool operator==(const ResourcesSpec&) const = default;
};

struct RestartSpec {
  int64_t max_restarts = 10;
  BackoffSpec backoff;
  std::optional<std::chrono::seconds> hang_timeout;  // nullopt: "auto" from step times
  NanPolicy nan_policy = NanPolicy::kRollback;
  int64_t max_rollbacks = 3;
  int64_t max_node_failures = 20;
  bool exclude_failed_nodes = true;

  bool operator==(const RestartSpec&) const = default;
};

struct CampaignSpec {
  CampaignSection campaign;
  ModelSpec model;
  DataSpec data;
  TrainSpec train;
  OptimizerSpec optimizer;
  CheckpointSpec checkpoint;
  ResourcesSpec resources;
  RestartSpec restart;

  // Steps to train: total_steps, or total_tokens divided by the tokens of one global batch,
  // rounded up.
  int64_t total_steps() const;
  // Micro-batches each rank runs per optimizer step on `world_size` ranks; 0 when the global
  // batch does not divide evenly over micro_batch × world_size.
  int64_t grad_accum_steps(int64_t world_size) const;

  bool operator==(const CampaignSpec&) const = default;
};

struct SpecParseOptions {
  // Check that data globs match files and that the checkpoint directory can be created.
  // Turned off to validate a file meant for another machine.
  bool check_paths = true;
  // Relative paths are resolved against this directory; empty: the current directory.
  std::filesystem::path base_dir;
};

struct SpecParseResult {
  std::optional<CampaignSpec> spec;  // set only when `errors` is empty
  std::vector<SpecError> errors;     // in file order

  bool ok() const { return errors.empty(); }
};

// One entry of resources.sbatch_options as belay's Slurm backend passes it to slurmctld.
struct SbatchOption {
  enum class Kind { kQos, kReservation, kConstraint, kExclusive };
  Kind kind = Kind::kQos;
  std::string value;  // empty for kExclusive
};

// The one rule for sbatch options, applied by the campaign validator and by the Slurm backend
// alike: "--qos=<name>", "--reservation=<name>", "--constraint=<features>" and "--exclusive"
// are what the backend can set through libslurm. InvalidArgument otherwise, with a message
// that quotes the option and says what is allowed (options belay sets itself, such as --time
// or -N, are named as such).
absl::StatusOr<SbatchOption> ParseSbatchOption(std::string_view option);

// Largest campaign file accepted; a file past it is refused before it is parsed.
inline constexpr size_t kMaxSpecBytes = 1 << 20;

// Parses and validates campaign TOML. `file` names the source in error messages. Never
// throws; reports every problem it finds, not only the first.
SpecParseResult ParseCampaignSpec(std::string_view text, std::string_view file,
                                  const SpecParseOptions& options = {});

// The spec as a complete campaign file: every key, defaults included, in the documented
// order. Parsing the output (with the same base directory) gives back an equal spec.
std::string FormatCampaignSpec(const CampaignSpec& spec);

// Reads `path` (at most kMaxSpecBytes) and parses it with base_dir defaulting to the file's
// directory. Unreadable files are reported as a SpecError at 1:1.
SpecParseResult LoadCampaignSpec(const std::filesystem::path& path, SpecParseOptions options = {});

}  // namespace belay

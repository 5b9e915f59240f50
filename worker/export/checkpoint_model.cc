// Reading a model's parameters and config out of a checkpoint step.
#include "worker/export/checkpoint_model.h"

#include <algorithm>
#include <string_view>

#include "common/ckpt/layout.h"
#include "common/ckpt/manifest.h"
#include "common/strings.h"
#include "worker/ckpt/step_shards.h"

namespace belay::hf {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kParamPrefix = "param/";

// Typed reads of the "model" object's keys; errors name the key.
class ModelKeys {
 public:
  explicit ModelKeys(const nlohmann::json& j) : j_(j) {}

  template <typename T>
  absl::Status Int(std::string_view key, T* out) const {
    const nlohmann::json* v = Find(key);
    if (v == nullptr || !v->is_number_integer()) return Bad(key, "an integer");
    *out = v->get<T>();
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Number(std::string_view key, T* out) const {
    const nlohmann::json* v = Find(key);
    if (v == nullptr || !v->is_number()) return Bad(key, "a number");
    *out = v->get<T>();
    return absl::OkStatus();
  }
  absl::Status Bool(std::string_view key, bool* out) const {
    const nlohmann::json* v = Find(key);
    if (v == nullptr || !v->is_boolean()) return Bad(key, "true or false");
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  const nlohmann::json* Find(std::string_view key) const {
    auto it = j_.find(std::string(key));
    return it == j_.end() ? nullptr : &*it;
  }
  static absl::Status Bad(std::string_view key, std::string_view what) {
    return absl::InvalidArgumentError(Cat("model.", key, ": missing or not ", what));
  }

 private:
  const nlohmann::json& j_;
};

// The first error of a sequence of key reads.
absl::Status FirstError(std::initializer_list<absl::Status> all) {
  for (const absl::Status& s : all) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckPaddedVocab(int vocab_size, int padded_vocab) {
  if (padded_vocab != (vocab_size + 127) / 128 * 128) {
    return absl::InvalidArgumentError(Cat("model.padded_vocab: ", padded_vocab,
                                          " is not vocab_size ", vocab_size,
                                          " rounded up to a multiple of 128"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SavedModelConfig> Gpt2FromJson(const ModelKeys& k) {
  model::Gpt2Config c;
  if (absl::Status s =
          FirstError({k.Int("n_layer", &c.n_layer), k.Int("n_head", &c.n_head),
                      k.Int("d_model", &c.d_model), k.Int("max_seq_len", &c.max_seq_len),
                      k.Int("vocab_size", &c.vocab_size), k.Int("padded_vocab", &c.padded_vocab)});
      !s.ok()) {
    return s;
  }
  if (c.n_layer <= 0 || c.n_head <= 0 || c.d_model <= 0 || c.max_seq_len <= 0 ||
      c.vocab_size <= 0 || c.d_model % c.n_head != 0) {
    return absl::InvalidArgumentError(
        "model: sizes must be positive and n_head must divide d_model");
  }
  if (absl::Status s = CheckPaddedVocab(c.vocab_size, c.padded_vocab); !s.ok()) return s;
  return c;
}

absl::StatusOr<model::MlpActivation> ActivationFromJson(const ModelKeys& k) {
  const nlohmann::json* v = k.Find("activation");
  if (v != nullptr && v->is_string()) {
    const std::string name = v->get<std::string>();
    if (name == "xielu") return model::MlpActivation::kXielu;
    if (name == "swiglu") return model::MlpActivation::kSwiglu;
    if (name == "gelu") return model::MlpActivation::kGelu;
  }
  return ModelKeys::Bad("activation", "one of \"xielu\", \"swiglu\", \"gelu\"");
}

absl::Status RopeScalingFromJson(const ModelKeys& k, kernels::cpu::RopeParams* rope) {
  const nlohmann::json* v = k.Find("rope_scaling");
  if (v == nullptr) return ModelKeys::Bad("rope_scaling", "null or an object");
  rope->factor = 1.0;  // null: no scaling
  if (v->is_null()) return absl::OkStatus();
  if (!v->is_object()) return ModelKeys::Bad("rope_scaling", "null or an object");
  const ModelKeys s(*v);
  absl::Status status = FirstError({s.Number("factor", &rope->factor),
                                    s.Number("low_freq_factor", &rope->low_freq_factor),
                                    s.Number("high_freq_factor", &rope->high_freq_factor),
                                    s.Number("original_context", &rope->original_context)});
  if (!status.ok()) {
    return absl::InvalidArgumentError(Cat("model.rope_scaling: ", status.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SavedModelConfig> ApertusFromJson(const ModelKeys& k) {
  SavedApertus a;
  model::ApertusConfig& c = a.config;
  int padded_vocab = 0;
  if (absl::Status s =
          FirstError({k.Int("n_layer", &c.n_layer), k.Int("n_head", &c.n_head),
                      k.Int("n_kv_head", &c.n_kv_head), k.Int("d_model", &c.d_model),
                      k.Int("d_ff", &c.d_ff), k.Int("vocab_size", &c.vocab_size),
                      k.Int("padded_vocab", &padded_vocab), k.Int("max_seq_len", &a.max_seq_len),
                      k.Number("rope_theta", &c.rope.theta), RopeScalingFromJson(k, &c.rope),
                      k.Bool("qk_norm", &c.qk_norm), k.Bool("tie_embeddings", &c.tie_embeddings),
                      k.Number("norm_eps", &c.norm_eps), k.Int("eod_token", &c.eod_token)});
      !s.ok()) {
    return s;
  }
  absl::StatusOr<model::MlpActivation> activation = ActivationFromJson(k);
  if (!activation.ok()) return activation.status();
  c.activation = *activation;
  if (std::string why = c.Invalid(); !why.empty())
    return absl::InvalidArgumentError("model: " + why);
  if (a.max_seq_len <= 0) return absl::InvalidArgumentError("model.max_seq_len: must be positive");
  if (absl::Status s = CheckPaddedVocab(c.vocab_size, padded_vocab); !s.ok()) return s;
  return a;
}

// The parameter tensors of the model, in its flat layout's order.
std::vector<model::TensorView> Tensors(const SavedModelConfig& config) {
  if (const auto* g = std::get_if<model::Gpt2Config>(&config))
    return model::ParameterLayout(*g).tensors();
  return model::ApertusLayout(std::get<SavedApertus>(config).config).tensors();
}

// The shard map must hold exactly this model's parameter tensors, each whole.
absl::Status CheckParamTensors(const ckpt::ShardMap& map,
                               const std::vector<model::TensorView>& tensors,
                               const fs::path& manifest) {
  size_t params = 0;
  for (const auto& [name, total] : map.totals) params += name.starts_with(kParamPrefix) ? 1 : 0;
  for (const model::TensorView& t : tensors) {
    const std::string name = Cat(kParamPrefix, t.name);
    auto it = map.totals.find(name);
    if (it == map.totals.end()) {
      return absl::FailedPreconditionError(
          Cat(manifest.string(), ": shard_map has no tensor ", name, " of the recorded model"));
    }
    if (it->second != static_cast<uint64_t>(t.size)) {
      return absl::FailedPreconditionError(Cat(manifest.string(), ": ", name, " has ", it->second,
                                               " elements; the recorded model's has ", t.size));
    }
  }
  if (params != tensors.size()) {
    return absl::FailedPreconditionError(Cat(manifest.string(), ": shard_map has ", params,
                                             " parameter tensors; the recorded model has ",
                                             tensors.size()));
  }
  return absl::OkStatus();
}

// The metadata of a shard: its step must be the manifest's; returns its model config.
absl::StatusOr<SavedModelConfig> ConfigOfShard(const ckpt::ShardReader& shard, int64_t step) {
  const nlohmann::json meta =
      nlohmann::json::parse(shard.metadata(), nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("model") || !meta["model"].is_object() ||
      !meta.contains("step") || !meta["step"].is_number_integer()) {
    return absl::DataLossError(Cat(shard.path().string(), ": metadata lacks model or step"));
  }
  if (meta["step"].get<int64_t>() != step) {
    return absl::DataLossError(Cat(shard.path().string(), ": holds step ", meta["step"].dump(),
                                   ", the manifest says ", step));
  }
  absl::StatusOr<SavedModelConfig> config = ModelConfigFromJson(meta["model"]);
  if (!config.ok()) {
    return absl::FailedPreconditionError(
        Cat(shard.path().string(), ": ", config.status().message()));
  }
  return config;
}

// The committed steps of one campaign directory, newest last.
absl::StatusOr<std::vector<int64_t>> StepsOf(const fs::path& campaign_dir) {
  return ckpt::ListCommittedSteps(campaign_dir.parent_path(), campaign_dir.filename().string());
}

}  // namespace

absl::StatusOr<SavedModelConfig> ModelConfigFromJson(const nlohmann::json& model) {
  if (!model.is_object()) return absl::InvalidArgumentError("model: not an object");
  const ModelKeys keys(model);
  const nlohmann::json* arch = keys.Find("arch");
  if (arch == nullptr) return Gpt2FromJson(keys);
  if (!arch->is_string()) return ModelKeys::Bad("arch", "a string");
  if (*arch == "gpt2") return Gpt2FromJson(keys);
  if (*arch == "apertus") return ApertusFromJson(keys);
  return absl::InvalidArgumentError(
      Cat("model.arch: unknown architecture ", arch->dump(), " (known: gpt2, apertus)"));
}

absl::StatusOr<fs::path> ResolveStepDir(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path / ckpt::kManifestFileName, ec)) return path;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(Cat(path.string(), ": no such checkpoint directory"));
  }
  // A campaign directory: step_<N> entries right under it.
  absl::StatusOr<std::vector<int64_t>> steps = StepsOf(path);
  if (!steps.ok()) return steps.status();
  if (!steps->empty())
    return ckpt::StepDir(path.parent_path(), path.filename().string(), steps->back());
  // A checkpoint root: the campaign directories under it that hold committed steps.
  std::vector<fs::path> campaigns;
  for (const fs::directory_entry& e : fs::directory_iterator(path, ec)) {
    if (!e.is_directory()) continue;
    absl::StatusOr<std::vector<int64_t>> inner = StepsOf(e.path());
    if (inner.ok() && !inner->empty()) campaigns.push_back(e.path());
  }
  if (ec) return absl::InternalError(Cat(path.string(), ": ", ec.message()));
  if (campaigns.empty()) {
    return absl::NotFoundError(Cat(path.string(), ": holds no committed checkpoint step"));
  }
  if (campaigns.size() > 1) {
    std::sort(campaigns.begin(), campaigns.end());
    std::string names;
    for (const fs::path& c : campaigns)
      names += (names.empty() ? "" : ", ") + c.filename().string();
    return absl::InvalidArgumentError(Cat(path.string(),
                                          ": holds the checkpoints of several campaigns (", names,
                                          "); name one of their directories"));
  }
  return ResolveStepDir(campaigns.front());
}

absl::StatusOr<CheckpointModel> ReadCheckpointModel(const fs::path& step_dir) {
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  const fs::path manifest_path = step_dir / ckpt::kManifestFileName;
  if (!manifest->shard_map) {
    return absl::FailedPreconditionError(
        Cat(manifest_path.string(), " has no shard_map: written by an earlier format"));
  }
  if (absl::Status s = ckpt::CheckShardFiles(*manifest, step_dir); !s.ok()) return s;
  ckpt::StepShards shards(step_dir, *manifest);
  absl::StatusOr<const ckpt::ShardReader*> first = shards.Of(0);
  if (!first.ok()) return first.status();
  CheckpointModel out;
  out.step_dir = step_dir;
  out.campaign = manifest->campaign;
  out.step = manifest->step;
  absl::StatusOr<SavedModelConfig> config = ConfigOfShard(**first, manifest->step);
  if (!config.ok()) return config.status();
  out.config = *config;

  const std::vector<model::TensorView> tensors = Tensors(out.config);
  const ckpt::ShardMap& map = *manifest->shard_map;
  if (absl::Status s = CheckParamTensors(map, tensors, manifest_path); !s.ok()) return s;
  int64_t total = 0;
  for (const model::TensorView& t : tensors) total = std::max(total, t.offset + t.size);
  out.params.assign(static_cast<size_t>(total), 0.0f);
  // Every shard is opened (and so verified), even one that holds no parameter.
  for (int rank = 1; rank < manifest->world_size; ++rank) {
    if (absl::StatusOr<const ckpt::ShardReader*> r = shards.Of(rank); !r.ok()) return r.status();
  }
  for (const model::TensorView& t : tensors) {
    const std::string name = Cat(kParamPrefix, t.name);
    for (const ckpt::ShardRange& part : map.Find(name, 0, static_cast<uint64_t>(t.size))) {
      absl::StatusOr<const ckpt::ShardReader*> reader = shards.Of(part.rank);
      if (!reader.ok()) return reader.status();
      float* to = out.params.data() + t.offset + static_cast<int64_t>(part.offset);
      if (absl::Status s = (*reader)->Read(name, part.offset, std::span<float>(to, part.count));
          !s.ok()) {
        return s;
      }
    }
  }
  return out;
}

}  // namespace belay::hf

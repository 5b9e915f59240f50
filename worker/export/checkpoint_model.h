// A model's parameters read back whole from a committed checkpoint, whatever world size and
// ZeRO stage wrote it, with the architecture and shape recorded in the shards' metadata.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/model/apertus.h"
#include "worker/model/params.h"

namespace belay::hf {

// Apertus as a checkpoint records it: the model config and the longest sequence trained on.
struct SavedApertus {
  model::ApertusConfig config;
  int max_seq_len = 0;
};

using SavedModelConfig = std::variant<model::Gpt2Config, SavedApertus>;

// The model config of a shard's metadata "model" object: "arch" "gpt2" (also when "arch" is
// absent, as checkpoints written before Apertus have it) or "apertus", with that
// architecture's keys (docs/checkpoints.md). InvalidArgument naming the key for an unknown
// arch, a missing or mistyped key, or a config that describes no model.
absl::StatusOr<SavedModelConfig> ModelConfigFromJson(const nlohmann::json& model);

// The step directory `path` names: itself when it holds manifest.json, else the newest
// committed step under it, where it is a campaign directory (holding step_<N> directories) or
// a checkpoint root holding one campaign's. NotFound when there is no committed step;
// InvalidArgument when a root holds several campaigns (name one).
absl::StatusOr<std::filesystem::path> ResolveStepDir(const std::filesystem::path& path);

struct CheckpointModel {
  std::filesystem::path step_dir;
  std::string campaign;
  int64_t step = 0;
  SavedModelConfig config;
  // The parameters in the architecture's flat layout (model::ParameterLayout or
  // model::ApertusLayout), fp32 as trained.
  std::vector<float> params;
};

// Reads the parameters ("param/<name>") of the step directory `step_dir` from whichever
// shards hold them. Every shard is checked as a resuming trainer checks it: present with the
// manifest's size, its checksum verified, its ranges those of the manifest's shard map; the
// step in its metadata that of the manifest; the shard map's tensors those of the recorded
// model. Errors name the file (NotFound: a missing shard; DataLoss: a corrupt one;
// FailedPrecondition: a checkpoint without a shard map or whose tensors do not fit its model).
absl::StatusOr<CheckpointModel> ReadCheckpointModel(const std::filesystem::path& step_dir);

}  // namespace belay::hf

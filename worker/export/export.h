// `belay export`: a committed checkpoint written out as a Hugging Face model directory.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "worker/export/safetensors.h"

namespace belay::hf {

struct ExportOptions {
  std::filesystem::path checkpoint;  // a step directory, or a directory above committed steps
  std::filesystem::path out;         // created if missing
  ExportDType dtype = ExportDType::kBf16;
};

struct ExportSummary {
  std::filesystem::path step_dir;  // the step exported
  std::string architecture;        // "GPT2LMHeadModel", "ApertusForCausalLM"
  int64_t tensors = 0;
  int64_t parameters = 0;  // elements written
};

// Reads the checkpoint (ReadCheckpointModel: every shard verified) and writes
// out/model.safetensors and out/config.json, each atomically. Errors as ResolveStepDir,
// ReadCheckpointModel and ApertusToHf give them, and those of writing under `out`.
absl::StatusOr<ExportSummary> ExportCheckpoint(const ExportOptions& options);

}  // namespace belay::hf

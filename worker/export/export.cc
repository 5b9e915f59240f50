// Exporting a checkpoint to the Hugging Face layout.
#include "worker/export/export.h"

#include <map>

#include "common/durable_file.h"
#include "common/strings.h"
#include "worker/export/checkpoint_model.h"
#include "worker/export/hf_model.h"

namespace belay::hf {
namespace {

namespace fs = std::filesystem;

absl::Status WriteText(const fs::path& path, const std::string& text) {
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(path);
  if (!file.ok()) return file.status();
  absl::Status s = file->Append(text);
  if (s.ok()) s = file->Commit();
  return s;
}

}  // namespace

absl::StatusOr<ExportSummary> ExportCheckpoint(const ExportOptions& options) {
  absl::StatusOr<fs::path> step_dir = ResolveStepDir(options.checkpoint);
  if (!step_dir.ok()) return step_dir.status();
  absl::StatusOr<CheckpointModel> checkpoint = ReadCheckpointModel(*step_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  absl::StatusOr<HfModel> hf = ToHf(*checkpoint);
  if (!hf.ok()) return hf.status();
  // Free the flat copy before the encoded one is made.
  checkpoint->params = {};

  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec) return absl::InternalError(Cat(options.out.string(), ": ", ec.message()));
  const std::string dtype = options.dtype == ExportDType::kBf16 ? "bfloat16" : "float32";
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},  // transformers refuses safetensors files of other frameworks
      {"belay.campaign", checkpoint->campaign},
      {"belay.step", std::to_string(checkpoint->step)},
  };
  if (absl::Status s =
          WriteSafetensors(options.out / "model.safetensors", hf->tensors, options.dtype, metadata);
      !s.ok()) {
    return s;
  }
  hf->config["torch_dtype"] = dtype;
  if (absl::Status s = WriteText(options.out / "config.json", hf->config.dump(2) + "\n"); !s.ok())
    return s;

  ExportSummary summary;
  summary.step_dir = *step_dir;
  summary.architecture = hf->config["architectures"][0].get<std::string>();
  summary.tensors = static_cast<int64_t>(hf->tensors.size());
  for (const NamedTensor& t : hf->tensors)
    summary.parameters += static_cast<int64_t>(t.values.size());
  return summary;
}

}  // namespace belay::hf

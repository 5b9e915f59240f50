// The campaign's files in belayd's state directory.
#include "daemon/supervisor/campaign_files.h"

#include "common/ckpt/layout.h"
#include "common/durable_file.h"
#include "common/strings.h"

namespace belay::supervisor {

namespace fs = std::filesystem;

// rwx--x--x: what lies above the attempt directories in belayd's state directory.
constexpr fs::perms kTraverseOnly =
    fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec;

fs::path CampaignStateDir(const fs::path& state_dir, const std::string& id) {
  return state_dir / "campaigns" / id;
}

fs::path AttemptLogDir(const fs::path& state_dir, const std::string& id, int32_t attempt) {
  return CampaignStateDir(state_dir, id) / Cat("attempt_", attempt);
}

absl::Status WriteEffectiveSpec(const fs::path& state_dir, const std::string& id,
                                const CampaignSpec& effective) {
  const fs::path dir = CampaignStateDir(state_dir, id);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(Cat(dir.string(), ": ", ec.message()));
  for (const fs::path& d : {dir.parent_path(), dir}) {
    fs::permissions(d, kTraverseOnly, fs::perm_options::replace, ec);
    if (ec) return absl::InternalError(Cat(d.string(), ": ", ec.message()));
  }
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(dir / "campaign.toml", {.mode = 0600});
  if (!file.ok()) return file.status();
  if (absl::Status s = file->Append(FormatCampaignSpec(effective)); !s.ok()) return s;
  return file->Commit();
}

absl::StatusOr<CampaignSpec> ReadEffectiveSpec(const fs::path& state_dir, const std::string& id) {
  SpecParseOptions po;
  po.check_paths = false;  // checked at submit; the worker reports missing data itself
  const fs::path spec_path = CampaignStateDir(state_dir, id) / "campaign.toml";
  SpecParseResult parsed = LoadCampaignSpec(spec_path, po);
  if (!parsed.ok()) {
    return absl::DataLossError(
        Cat(spec_path.string(), ": ", parsed.errors.empty() ? "" : parsed.errors[0].ToString()));
  }
  return std::move(*parsed.spec);
}

bool CheckpointDirTaken(const fs::path& root, const std::string& id) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(ckpt::CampaignDir(root, id), ec));
}

}  // namespace belay::supervisor

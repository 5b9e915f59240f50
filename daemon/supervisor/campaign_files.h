// belayd's own files of a campaign under its state directory: campaigns/<id>/campaign.toml,
// the effective spec (every path absolute, the checkpoints named by the campaign id), which
// only belayd reads, and campaigns/<id>/attempt_<n>/ for each attempt's rank logs and the
// files its job gets. Also whether a checkpoint directory by a campaign's id is taken.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "common/campaign_spec.h"

namespace belay::supervisor {

std::filesystem::path CampaignStateDir(const std::filesystem::path& state_dir,
                                       const std::string& id);
std::filesystem::path AttemptLogDir(const std::filesystem::path& state_dir, const std::string& id,
                                    int32_t attempt);

// Writes `effective` as campaign `id`'s campaign.toml (mode 0600, atomically). The directories
// above it let the owner's ranks through to their attempt directories and list nothing
// (rwx--x--x). Internal or the file's error.
absl::Status WriteEffectiveSpec(const std::filesystem::path& state_dir, const std::string& id,
                                const CampaignSpec& effective);
// The effective spec of campaign `id` (its paths not checked again). DataLoss naming the
// file and the first problem when it does not parse.
absl::StatusOr<CampaignSpec> ReadEffectiveSpec(const std::filesystem::path& state_dir,
                                               const std::string& id);

// Whether anything (a dangling symlink too) has the name of campaign `id`'s checkpoint
// directory under `root`.
bool CheckpointDirTaken(const std::filesystem::path& root, const std::string& id);

}  // namespace belay::supervisor

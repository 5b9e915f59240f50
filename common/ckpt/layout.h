// Where checkpoints live on disk, and the directory operations that keep that tree
// consistent: committing a step, listing committed steps, cleaning up after a crash, retention.
//
//   <root>/<campaign>/step_<N, 9 digits>/rank_<r, 5 digits>.bin
//                                       /manifest.json
//
// A step directory counts as committed once it holds manifest.json: in standalone
// (single-process) mode the step is written under `step_<N>.tmp` and renamed into place after
// its manifest, so a committed name appears complete or not at all; under belayd, ranks write
// into `step_<N>` and the manifest is written last, after the commit. Names ending in ".tmp"
// (kTempSuffix, common/durable_file.h) or ".trash" are never committed checkpoints.
//
// None of these functions lock anything: run RemoveIncomplete, ApplyRetention and CommitStep
// from one process per campaign at a time, and RemoveIncomplete only while no writer is
// active for the campaign.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace belay::ckpt {

inline constexpr std::string_view kManifestFileName = "manifest.json";

// "step_000001200". `step` must be >= 0; a negative one is a caller bug and aborts.
std::string StepDirName(int64_t step);
// Inverse of StepDirName for the exact names it produces ("step_" and at least nine digits,
// no extra leading zeros); nullopt for anything else, temporary names included.
std::optional<int64_t> ParseStepDirName(std::string_view name);
// "rank_00003.bin". `rank` must be >= 0; a negative one aborts.
std::string ShardFileName(int rank);

// InvalidArgument unless `campaign` is usable as one directory name: non-empty, not "." or
// "..", no '/' or NUL. (Campaign files restrict names further; this is what the layout needs.)
absl::Status ValidateCampaignName(std::string_view campaign);

std::filesystem::path CampaignDir(const std::filesystem::path& root, std::string_view campaign);
// <root>/<campaign>/step_<N>: the committed name.
std::filesystem::path StepDir(const std::filesystem::path& root, std::string_view campaign,
                              int64_t step);
// <root>/<campaign>/step_<N>.tmp: where standalone mode writes a step before CommitStep.
std::filesystem::path StepTempDir(const std::filesystem::path& root, std::string_view campaign,
                                  int64_t step);

// Standalone mode: creates an empty StepTempDir (and the directories above it), removing what
// a crashed earlier try left there. AlreadyExists if the step is already committed.
absl::StatusOr<std::filesystem::path> BeginStep(const std::filesystem::path& root,
                                                std::string_view campaign, int64_t step);
// Under belayd: an empty StepDir for the ranks to write their shards into (and the
// directories above it). A step directory already there — an earlier attempt's save of this
// step on a trajectory given up since, committed or not — is deleted first (renamed to
// ".trash", then removed). Call it from the campaign's one writing process.
absl::Status PrepareStepDir(const std::filesystem::path& root, std::string_view campaign,
                            int64_t step);
// Standalone mode: renames StepTempDir to StepDir and fsyncs the campaign directory. The
// temporary directory must hold manifest.json (FailedPrecondition otherwise); AlreadyExists if
// the step is already committed (remove the old one first).
absl::Status CommitStep(const std::filesystem::path& root, std::string_view campaign, int64_t step);

// Committed steps of the campaign, ascending. Other names (temporary, junk, files) are
// skipped. A campaign directory that does not exist yet has no steps: an empty list.
absl::StatusOr<std::vector<int64_t>> ListCommittedSteps(const std::filesystem::path& root,
                                                        std::string_view campaign);

// Deletes what interrupted writes and deletions left: entries of the campaign directory
// named `*.tmp` or `*.trash`, and `*.tmp` files inside step directories. Returns the paths
// removed, sorted. Step directories without a manifest are left alone: under belayd they may
// belong to a checkpoint the daemon has committed but not yet described.
absl::StatusOr<std::vector<std::filesystem::path>> RemoveIncomplete(
    const std::filesystem::path& root, std::string_view campaign);

// Deletes one committed step: renamed to `step_<N>.trash` first (so a crash mid-deletion never
// leaves a committed-looking partial step), then removed.
absl::Status DeleteStep(const std::filesystem::path& root, std::string_view campaign, int64_t step);

// Deletes committed steps that no rule keeps, and returns them ascending. A step is kept when
// it is one of the newest `keep_last`, when `keep_every` > 0 and step % keep_every == 0, or
// when it is `protect_step` (the newest good checkpoint, which must survive whatever the other
// rules say). Each step is first renamed to `step_<N>.trash` (so a crash mid-deletion never
// leaves a committed-looking partial step) and then removed. InvalidArgument for negative
// keep_last or keep_every; on an I/O error, the steps deleted so far stay deleted.
absl::StatusOr<std::vector<int64_t>> ApplyRetention(const std::filesystem::path& root,
                                                    std::string_view campaign, int64_t keep_last,
                                                    int64_t keep_every,
                                                    std::optional<int64_t> protect_step);

}  // namespace belay::ckpt

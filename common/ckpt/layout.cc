// Checkpoint directory names and the directory operations over them.
#include "common/ckpt/layout.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <system_error>

#include "absl/strings/str_format.h"
#include "common/durable_file.h"
#include "common/strings.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kStepPrefix = "step_";
constexpr std::string_view kTrashSuffix = ".trash";
constexpr int kStepDigits = 9;

absl::Status FsError(const std::error_code& ec, const fs::path& path, std::string_view what) {
  return ErrnoError(ec.value(), path, what);
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

fs::path TrashDir(const fs::path& root, std::string_view campaign, int64_t step) {
  return CampaignDir(root, campaign) / Cat(StepDirName(step), kTrashSuffix);
}

// NotFound-tolerant existence check that reports other errors (permissions, I/O).
absl::StatusOr<bool> Exists(const fs::path& path) {
  std::error_code ec;
  fs::file_status st = fs::symlink_status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) return FsError(ec, path, "cannot stat");
  return fs::exists(st);
}

absl::Status CheckStep(int64_t step) {
  if (step < 0) return absl::InvalidArgumentError(Cat("step ", step, " is negative"));
  return absl::OkStatus();
}

absl::Status RemoveAll(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return FsError(ec, path, "cannot remove");
  return absl::OkStatus();
}

}  // namespace

std::string StepDirName(int64_t step) {
  if (step < 0) {
    std::cerr << "belay::ckpt::StepDirName: negative step " << step << "\n";
    std::abort();
  }
  return absl::StrFormat("step_%09d", step);
}

std::optional<int64_t> ParseStepDirName(std::string_view name) {
  if (name.size() < kStepPrefix.size() + kStepDigits ||
      name.substr(0, kStepPrefix.size()) != kStepPrefix) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kStepPrefix.size());
  if (digits.size() > 18) return std::nullopt;  // would not fit in int64_t
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  if (StepDirName(step) != name) return std::nullopt;  // extra leading zeros
  return step;
}

std::string ShardFileName(int rank) {
  if (rank < 0) {
    std::cerr << "belay::ckpt::ShardFileName: negative rank " << rank << "\n";
    std::abort();
  }
  return absl::StrFormat("rank_%05d.bin", rank);
}

absl::Status ValidateCampaignName(std::string_view campaign) {
  if (campaign.empty() || campaign == "." || campaign == ".." ||
      campaign.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos) {
    return absl::InvalidArgumentError(
        Cat("campaign name \"", campaign, "\" cannot be a checkpoint directory name"));
  }
  return absl::OkStatus();
}

fs::path CampaignDir(const fs::path& root, std::string_view campaign) {
  return root / fs::path(campaign);
}

fs::path StepDir(const fs::path& root, std::string_view campaign, int64_t step) {
  return CampaignDir(root, campaign) / StepDirName(step);
}

fs::path StepTempDir(const fs::path& root, std::string_view campaign, int64_t step) {
  return CampaignDir(root, campaign) / Cat(StepDirName(step), kTempSuffix);
}

absl::StatusOr<fs::path> BeginStep(const fs::path& root, std::string_view campaign, int64_t step) {
  if (absl::Status s = ValidateCampaignName(campaign); !s.ok()) return s;
  if (absl::Status s = CheckStep(step); !s.ok()) return s;
  const fs::path final_dir = StepDir(root, campaign, step);
  absl::StatusOr<bool> committed = Exists(final_dir);
  if (!committed.ok()) return committed.status();
  if (*committed) {
    return absl::AlreadyExistsError(Cat(final_dir.string(), ": step already committed"));
  }
  const fs::path temp = StepTempDir(root, campaign, step);
  if (absl::Status s = RemoveAll(temp); !s.ok()) return s;
  std::error_code ec;
  fs::create_directories(temp, ec);
  if (ec) return FsError(ec, temp, "cannot create");
  // Make the new directory entries durable, so the step's shards are reachable after a crash.
  if (absl::Status s = SyncDirectory(root); !s.ok()) return s;
  if (absl::Status s = SyncDirectory(CampaignDir(root, campaign)); !s.ok()) return s;
  return temp;
}

absl::Status PrepareStepDir(const fs::path& root, std::string_view campaign, int64_t step) {
  if (absl::Status s = ValidateCampaignName(campaign); !s.ok()) return s;
  if (absl::Status s = CheckStep(step); !s.ok()) return s;
  const fs::path dir = StepDir(root, campaign, step);
  absl::StatusOr<bool> there = Exists(dir);
  if (!there.ok()) return there.status();
  if (*there) {
    if (absl::Status s = DeleteStep(root, campaign, step); !s.ok()) return s;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FsError(ec, dir, "cannot create");
  if (absl::Status s = SyncDirectory(root); !s.ok()) return s;
  return SyncDirectory(CampaignDir(root, campaign));
}

absl::Status CommitStep(const fs::path& root, std::string_view campaign, int64_t step) {
  if (absl::Status s = ValidateCampaignName(campaign); !s.ok()) return s;
  if (absl::Status s = CheckStep(step); !s.ok()) return s;
  const fs::path temp = StepTempDir(root, campaign, step);
  const fs::path final_dir = StepDir(root, campaign, step);
  absl::StatusOr<bool> temp_exists = Exists(temp);
  if (!temp_exists.ok()) return temp_exists.status();
  if (!*temp_exists) return absl::NotFoundError(Cat(temp.string(), ": no step being written"));
  absl::StatusOr<bool> has_manifest = Exists(temp / kManifestFileName);
  if (!has_manifest.ok()) return has_manifest.status();
  if (!*has_manifest) {
    return absl::FailedPreconditionError(
        Cat(temp.string(), ": no ", kManifestFileName, "; write it before committing"));
  }
  absl::StatusOr<bool> committed = Exists(final_dir);
  if (!committed.ok()) return committed.status();
  if (*committed) {
    return absl::AlreadyExistsError(Cat(final_dir.string(), ": step already committed"));
  }
  std::error_code ec;
  fs::rename(temp, final_dir, ec);
  if (ec) return FsError(ec, temp, Cat("cannot rename to ", final_dir.string()));
  return SyncDirectory(CampaignDir(root, campaign));
}

absl::StatusOr<std::vector<int64_t>> ListCommittedSteps(const fs::path& root,
                                                        std::string_view campaign) {
  if (absl::Status s = ValidateCampaignName(campaign); !s.ok()) return s;
  const fs::path dir = CampaignDir(root, campaign);
  std::vector<int64_t> steps;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return steps;
  if (ec) return FsError(ec, dir, "cannot list");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    std::optional<int64_t> step = ParseStepDirName(it->path().filename().string());
    if (!step) continue;
    std::error_code ec2;
    if (!it->is_directory(ec2)) continue;
    if (!fs::is_regular_file(it->path() / kManifestFileName, ec2)) continue;
    steps.push_back(*step);
  }
  if (ec) return FsError(ec, dir, "cannot list");
  std::sort(steps.begin(), steps.end());
  return steps;
}

absl::StatusOr<std::vector<fs::path>> RemoveIncomplete(const fs::path& root,
                                                       std::string_view campaign) {
  if (absl::Status s = ValidateCampaignName(campaign); !s.ok()) return s;
  const fs::path dir = CampaignDir(root, campaign);
  std::vector<fs::path> doomed;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return doomed;
  if (ec) return FsError(ec, dir, "cannot list");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (EndsWith(name, kTempSuffix) || EndsWith(name, kTrashSuffix)) {
      doomed.push_back(it->path());
      continue;
    }
    std::error_code ec2;
    if (!ParseStepDirName(name) || !it->is_directory(ec2)) continue;
    fs::directory_iterator inner(it->path(), ec2);
    if (ec2) return FsError(ec2, it->path(), "cannot list");
    for (; inner != fs::directory_iterator(); inner.increment(ec2)) {
      if (EndsWith(inner->path().filename().string(), kTempSuffix)) doomed.push_back(inner->path());
    }
    if (ec2) return FsError(ec2, it->path(), "cannot list");
  }
  if (ec) return FsError(ec, dir, "cannot list");
  std::sort(doomed.begin(), doomed.end());
  for (const fs::path& p : doomed) {
    if (absl::Status s = RemoveAll(p); !s.ok()) return s;
  }
  return doomed;
}

absl::Status DeleteStep(const fs::path& root, std::string_view campaign, int64_t step) {
  const fs::path trash = TrashDir(root, campaign, step);
  if (absl::Status s = RemoveAll(trash); !s.ok()) return s;
  std::error_code ec;
  fs::rename(StepDir(root, campaign, step), trash, ec);
  if (ec) return FsError(ec, StepDir(root, campaign, step), "cannot rename for deletion");
  if (absl::Status s = SyncDirectory(CampaignDir(root, campaign)); !s.ok()) return s;
  return RemoveAll(trash);
}

absl::StatusOr<std::vector<int64_t>> ApplyRetention(const fs::path& root, std::string_view campaign,
                                                    int64_t keep_last, int64_t keep_every,
                                                    std::optional<int64_t> protect_step) {
  if (keep_last < 0 || keep_every < 0) {
    return absl::InvalidArgumentError(Cat("retention: keep_last (", keep_last, ") and keep_every (",
                                          keep_every, ") must not be negative"));
  }
  absl::StatusOr<std::vector<int64_t>> steps = ListCommittedSteps(root, campaign);
  if (!steps.ok()) return steps.status();
  const size_t n = steps->size();
  const size_t newest_kept_from = n - std::min<size_t>(n, static_cast<size_t>(keep_last));
  std::vector<int64_t> deleted;
  for (size_t i = 0; i < newest_kept_from; ++i) {
    const int64_t step = (*steps)[i];
    if (protect_step && step == *protect_step) continue;
    if (keep_every > 0 && step % keep_every == 0) continue;
    if (absl::Status s = DeleteStep(root, campaign, step); !s.ok()) return s;
    deleted.push_back(step);
  }
  return deleted;
}

}  // namespace belay::ckpt

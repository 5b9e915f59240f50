// FakeCheckpointFiles: a set of paths and the faults the test asked for.
#include "daemon/checkpoints/fake_checkpoint_files.h"

#include "common/ckpt/layout.h"
#include "common/strings.h"

namespace belay::checkpoints {

namespace fs = std::filesystem;

pb::CheckpointShard HalfOfTensorW(int64_t step, int rank, const std::string& path, int64_t bytes,
                                  uint64_t xxh3) {
  pb::CheckpointShard sh;
  sh.set_step(step);
  sh.set_rank(rank);
  sh.set_path(path);
  sh.set_bytes(bytes);
  sh.set_xxh3(xxh3);
  pb::TensorSlice* t = sh.add_tensors();
  t->set_name("w");
  t->set_dtype("f32");
  t->add_shape(10);
  t->set_element_offset(5 * rank);
  t->set_element_count(5);
  return sh;
}

void FakeCheckpointFiles::AddStep(const fs::path& root, const std::string& campaign, int64_t step) {
  MutexLock lock(&mu_);
  paths_.insert(ckpt::CampaignDir(root, campaign));
  paths_.insert(ckpt::StepDir(root, campaign, step));
}

void FakeCheckpointFiles::SetProblem(const fs::path& dir, std::string problem) {
  MutexLock lock(&mu_);
  problems_[dir] = std::move(problem);
}

void FakeCheckpointFiles::FailVerify(absl::Status status) {
  MutexLock lock(&mu_);
  verify_error_ = std::move(status);
}

void FakeCheckpointFiles::FailManifest(absl::Status status) {
  MutexLock lock(&mu_);
  manifest_error_ = std::move(status);
}

void FakeCheckpointFiles::FailDelete(int64_t step) {
  MutexLock lock(&mu_);
  undeletable_.insert(step);
}

void FakeCheckpointFiles::HoldVerify(bool hold) {
  MutexLock lock(&mu_);
  hold_ = hold;
  hold_changed_.SignalAll();
}

bool FakeCheckpointFiles::Exists(const fs::path& path) {
  MutexLock lock(&mu_);
  return paths_.contains(path);
}

absl::StatusOr<std::string> FakeCheckpointFiles::Verify(const pb::Checkpoint& ck, uint32_t) {
  MutexLock lock(&mu_);
  while (hold_) hold_changed_.Wait(&mu_);
  ++verified_;
  if (!verify_error_.ok()) return verify_error_;
  if (!paths_.contains(fs::path(ck.dir()))) return Cat(ck.dir(), ": no such directory");
  auto it = problems_.find(ck.dir());
  return it == problems_.end() ? std::string() : it->second;
}

absl::Status FakeCheckpointFiles::WriteManifest(const pb::Checkpoint& ck, const ckpt::Manifest& m,
                                                uint32_t) {
  MutexLock lock(&mu_);
  if (!manifest_error_.ok()) return manifest_error_;
  manifests_[ck.dir()] = m;
  paths_.insert(fs::path(ck.dir()) / ckpt::kManifestFileName);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> FakeCheckpointFiles::TidyAndListSteps(
    const fs::path& root, const std::string& campaign, uint32_t) {
  MutexLock lock(&mu_);
  const fs::path dir = ckpt::CampaignDir(root, campaign);
  if (!paths_.contains(dir)) return absl::NotFoundError(Cat(dir.string(), ": no such directory"));
  std::vector<int64_t> steps;
  for (const fs::path& p : paths_) {
    if (p.parent_path() != dir) continue;
    if (std::optional<int64_t> step = ckpt::ParseStepDirName(p.filename().string())) {
      steps.push_back(*step);
    }
  }
  return steps;
}

absl::Status FakeCheckpointFiles::DeleteStep(const fs::path& root, const std::string& campaign,
                                             int64_t step, uint32_t) {
  MutexLock lock(&mu_);
  if (undeletable_.contains(step)) {
    return absl::PermissionDeniedError(Cat("step ", step, ": permission denied"));
  }
  const fs::path dir = ckpt::StepDir(root, campaign, step);
  std::erase_if(paths_, [&](const fs::path& p) { return p == dir || p.parent_path() == dir; });
  return absl::OkStatus();
}

int FakeCheckpointFiles::verified() const {
  MutexLock lock(&mu_);
  return verified_;
}

std::map<fs::path, ckpt::Manifest> FakeCheckpointFiles::manifests() const {
  MutexLock lock(&mu_);
  return manifests_;
}

}  // namespace belay::checkpoints

// Writing and reading one rank's checkpoint shards, and the manifest of a standalone save.
#include "worker/train/checkpoint_io.h"

#include <algorithm>
#include <ctime>
#include <optional>
#include <utility>

#include "common/ckpt/layout.h"
#include "common/ckpt/manifest.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/ckpt/step_shards.h"
#include "worker/data/loader_state.h"
#include "worker/optim/optimizer.h"
#include "worker/train/rank_agreement.h"

namespace belay::train {
namespace {

namespace fs = std::filesystem;

// The flat buffers a checkpoint holds, each stored tensor by tensor under its logical name
// ("param/<tensor>", then "<state>/<tensor>" for each of the optimizer's states), so that a
// loader can re-partition them over any number of ranks.
constexpr std::string_view kParamPrefix = "param/";

std::vector<std::string> PrefixesOf(OptimizerKind optimizer) {
  std::vector<std::string> prefixes = {std::string(kParamPrefix)};
  for (std::string_view state : optim::Optimizer::StateNames(optimizer)) {
    prefixes.push_back(Cat(state, "/"));
  }
  return prefixes;
}

// Where an owned piece starts inside its tensor.
uint64_t OffsetInTensor(const std::vector<model::TensorView>& tensors, const OwnedPiece& p) {
  return static_cast<uint64_t>(p.flat_offset - tensors[static_cast<size_t>(p.tensor)].offset);
}

// The optimizer whose states a shard map holds, when it is one this build knows.
std::optional<OptimizerKind> OptimizerOfMap(const ckpt::ShardMap& map) {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kAdemamix}) {
    const std::string first = Cat(optim::Optimizer::StateNames(kind)[0], "/");
    for (const auto& [name, total] : map.totals) {
      if (name.starts_with(first)) return kind;
    }
  }
  return std::nullopt;
}

// The shard map must describe exactly this model's tensors and this optimizer's states.
absl::Status CheckShardMapTensors(const ckpt::ShardMap& map,
                                  const std::vector<model::TensorView>& tensors,
                                  OptimizerKind optimizer, const std::string& where) {
  if (std::optional<OptimizerKind> saved = OptimizerOfMap(map); saved && *saved != optimizer) {
    return absl::FailedPreconditionError(Cat(where, ": holds the state of optimizer ",
                                             ToString(*saved), "; this campaign's is ",
                                             ToString(optimizer), " (optimizer.name)"));
  }
  size_t expected = 0;
  for (const model::TensorView& t : tensors) {
    for (const std::string& prefix : PrefixesOf(optimizer)) {
      ++expected;
      auto it = map.totals.find(Cat(prefix, t.name));
      if (it == map.totals.end())
        return absl::FailedPreconditionError(Cat(where, ": no tensor ", prefix, t.name));
      if (it->second != static_cast<uint64_t>(t.size)) {
        return absl::FailedPreconditionError(Cat(where, ": ", prefix, t.name, " has ", it->second,
                                                 " elements; this model's has ", t.size));
      }
    }
  }
  if (map.totals.size() != expected) {
    return absl::FailedPreconditionError(
        Cat(where, ": ", map.totals.size(), " tensors; this model has ", expected));
  }
  return absl::OkStatus();
}

// A shard's metadata: the step the manifest names, the campaign's model shape, and the data
// loader's state, which must fit `data`.
absl::StatusOr<data::LoaderState> CheckMetadata(const ckpt::ShardReader& shard,
                                                const ckpt::Manifest& manifest,
                                                const fs::path& step_dir,
                                                const model::Architecture& arch,
                                                const data::DataLoader& data) {
  nlohmann::json meta =
      nlohmann::json::parse(shard.metadata(), nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("model") || !meta.contains("loader") ||
      !meta.contains("step") || !meta["step"].is_number_integer()) {
    return absl::DataLossError(
        Cat(shard.path().string(), ": metadata lacks model, loader or step"));
  }
  if (meta["step"].get<int64_t>() != manifest.step) {
    return absl::DataLossError(Cat(shard.path().string(), ": holds step ", meta["step"].dump(),
                                   ", the manifest says ", manifest.step));
  }
  const nlohmann::json saved = model::NormalizedConfig(meta["model"]);
  const nlohmann::json ours = model::NormalizedConfig(arch.Config());
  if (saved.is_object() && saved["arch"] != ours["arch"]) {
    return absl::FailedPreconditionError(
        Cat(step_dir.string(), ": checkpoint of a model of architecture ", saved["arch"].dump(),
            "; this campaign trains ", ours["arch"].dump(), " (model.arch)"));
  }
  if (saved != ours) {
    return absl::FailedPreconditionError(Cat(step_dir.string(), ": saved model ", saved.dump(),
                                             " differs from the campaign's ", ours.dump()));
  }
  absl::StatusOr<data::LoaderState> loader = data::LoaderStateFromJson(meta["loader"]);
  if (!loader.ok()) return loader.status();
  if (absl::Status s = data.CheckResume(*loader); !s.ok()) return s;
  return loader;
}

// Removes what a failed save left (a full disk must not stay full of it).
void RemovePartialStep(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace

CheckpointIo::CheckpointIo(const CampaignSpec& spec, comm::Communicator& comm,
                           const model::Architecture& arch, const ShardPlan& plan)
    : spec_(spec),
      comm_(comm),
      arch_(arch),
      plan_(plan),
      owned_(plan.Owned(comm.rank())),
      prefixes_(PrefixesOf(spec.optimizer.name)) {}

absl::StatusOr<std::unique_ptr<PendingSave>> CheckpointIo::BeginSave(
    const fs::path& root, const StepMetrics& last, SaveMode mode, bool background,
    TrainingPosition at, const data::LoaderState& loader, RankState state) {
  const std::string& campaign = spec_.campaign.name;
  const int W = comm_.world_size(), r = comm_.rank();
  const bool standalone = mode == SaveMode::kCommit;
  // Rank 0 prepares the step directory (standalone: the temporary one); everyone writes into it.
  absl::Status prepared;
  if (r == 0 && !standalone) {
    prepared = ckpt::PrepareStepDir(root, campaign, at.step);
  } else if (r == 0) {
    prepared = ckpt::BeginStep(root, campaign, at.step).status();
    if (absl::IsAlreadyExists(prepared)) {
      // Written by an earlier attempt that resumed from before it (a rollback, or a save
      // belayd never heard of): that trajectory was abandoned, this one replaces it.
      spdlog::warn("replacing checkpoint step {} of an earlier attempt in {}", at.step,
                   root.string());
      prepared = ckpt::DeleteStep(root, campaign, at.step);
      if (prepared.ok()) prepared = ckpt::BeginStep(root, campaign, at.step).status();
    }
  }
  if (absl::Status s = AgreeOnStatus(comm_, prepared); !s.ok()) return s;
  auto save = std::make_unique<PendingSave>();
  save->root = root;
  save->tmp = standalone ? ckpt::StepTempDir(root, campaign, at.step)
                         : ckpt::StepDir(root, campaign, at.step);
  save->mode = mode;
  save->step = at.step;
  save->next_sequence = static_cast<int64_t>(at.next_sequence);
  save->last = last;
  AddRanges(*save, background, state);
  nlohmann::json meta = {
      {"step", at.step},
      {"world_size", W},
      {"rank", r},
      {"zero_stage", spec_.train.zero_stage},
      {"model", arch_.Config()},
      {"optimizer", ToString(spec_.optimizer.name)},
      {"loader", data::LoaderStateToJson(loader)},
      // Training draws no random numbers after initialisation (no dropout); the seed is
      // what a resumed run would need to redraw anything.
      {"rng", {{"init_seed", spec_.train.seed}}},
  };
  save->writer.SetMetadata(meta.dump());
  if (save->local.ok()) {
    PendingSave* p = save.get();
    auto write = [p, r] { p->written = p->writer.Write(p->tmp / ckpt::ShardFileName(r)); };
    if (background) {
      save->thread = std::thread(write);
    } else {
      write();
    }
  }
  return save;
}

void CheckpointIo::AddRanges(PendingSave& save, bool background, RankState state) const {
  // This rank's ranges, by logical tensor name: copied for a background write (training goes
  // on meanwhile), written from where they are otherwise.
  int64_t owned = 0;
  for (const OwnedPiece& p : owned_) owned += p.size;
  if (background) save.state.resize(prefixes_.size() * static_cast<size_t>(owned));
  float* to = save.state.data();
  const std::vector<model::TensorView>& tensors = arch_.tensors();
  std::vector<const float*> bufs(prefixes_.size());
  for (const OwnedPiece& p : owned_) {
    const model::TensorView& t = tensors[static_cast<size_t>(p.tensor)];
    const uint64_t in_tensor = OffsetInTensor(tensors, p);
    bufs[0] = state.params + p.flat_offset;
    for (size_t k = 1; k < bufs.size(); ++k) bufs[k] = state.states[k - 1] + StateOffset(p);
    for (size_t k = 0; k < prefixes_.size() && save.local.ok(); ++k) {
      const float* from = bufs[k];
      if (background) {
        from = std::copy(bufs[k], bufs[k] + p.size, to) - p.size;
        to += p.size;
      }
      std::string name = Cat(prefixes_[k], t.name);
      save.local = save.writer.Add(name, in_tensor, static_cast<uint64_t>(t.size),
                                   std::span<const float>(from, static_cast<size_t>(p.size)));
      save.info.slices.push_back({std::move(name), in_tensor, static_cast<uint64_t>(p.size),
                                  static_cast<uint64_t>(t.size)});
    }
    if (!save.local.ok()) break;
  }
}

absl::StatusOr<CheckpointInfo> CheckpointIo::FinishSave(PendingSave& save) {
  const int W = comm_.world_size(), r = comm_.rank();
  if (save.thread.joinable()) save.thread.join();
  absl::Status local = save.local;
  ckpt::ShardFileInfo shard;
  if (local.ok()) {
    if (save.written.ok()) {
      shard = *save.written;
    } else {
      local = save.written.status();
    }
  }
  if (absl::Status s = AgreeOnStatus(comm_, local); !s.ok()) {
    if (r == 0) RemovePartialStep(save.tmp);
    return s;
  }

  CheckpointInfo info = std::move(save.info);
  info.step_dir = ckpt::StepDir(save.root, spec_.campaign.name, save.step);
  info.step = save.step;
  info.bytes = static_cast<int64_t>(shard.bytes);
  info.xxh3 = shard.xxh3;
  // Under belayd that is all: each rank reports its shard, belayd commits and writes the
  // manifest.
  if (save.mode != SaveMode::kCommit) return info;

  // Standalone: rank 0 collects every shard's size and sum for the manifest, writes it and
  // commits.
  const int64_t sums[2] = {static_cast<int64_t>(shard.bytes), static_cast<int64_t>(shard.xxh3)};
  std::vector<int64_t> every(static_cast<size_t>(2 * W));
  CheckCollective(comm_.AllGatherInt64(sums, every), "all-gather of shard sums");
  const absl::Status committed = r == 0 ? Commit(save, every) : absl::OkStatus();
  if (absl::Status s = AgreeOnStatus(comm_, committed); !s.ok()) {
    if (r == 0) RemovePartialStep(save.tmp);
    return s;
  }
  return info;
}

absl::Status CheckpointIo::Commit(const PendingSave& save, const std::vector<int64_t>& sums) const {
  const std::string& campaign = spec_.campaign.name;
  const int W = comm_.world_size();
  ckpt::Manifest manifest;
  manifest.campaign = campaign;
  manifest.step = save.step;
  manifest.world_size = W;
  for (int q = 0; q < W; ++q) {
    manifest.shards.push_back({q, ckpt::ShardFileName(q),
                               static_cast<uint64_t>(sums[static_cast<size_t>(2 * q)]),
                               static_cast<uint64_t>(sums[static_cast<size_t>(2 * q + 1)])});
  }
  // Every rank's ranges, from the same plan the ranks wrote by.
  ckpt::ShardMap map;
  for (int q = 0; q < W; ++q) {
    for (const OwnedPiece& p : plan_.Owned(q)) {
      const model::TensorView& t = arch_.tensors()[static_cast<size_t>(p.tensor)];
      for (const std::string& prefix : prefixes_) {
        map.Add(Cat(prefix, t.name), static_cast<uint64_t>(t.size),
                {q, OffsetInTensor(arch_.tensors(), p), static_cast<uint64_t>(p.size)});
      }
    }
  }
  manifest.shard_map = std::move(map);
  const StepMetrics& last = save.last;
  manifest.metrics = {{"loss", last.loss},           {"lr", last.lr},
                      {"grad_norm", last.grad_norm}, {"sequences_seen", save.next_sequence},
                      {"tokens", last.tokens},       {"zero_stage", spec_.train.zero_stage}};
  manifest.created_unix = static_cast<int64_t>(std::time(nullptr));
  absl::Status committed = ckpt::WriteManifest(save.tmp, manifest);
  if (committed.ok()) committed = ckpt::CommitStep(save.root, campaign, save.step);
  if (committed.ok()) {
    absl::StatusOr<std::vector<int64_t>> removed =
        ckpt::ApplyRetention(save.root, campaign, spec_.checkpoint.keep_last,
                             spec_.checkpoint.keep_every, /*protect_step=*/save.step);
    if (!removed.ok()) {
      spdlog::warn("checkpoint retention: {}", std::string(removed.status().message()));
    }
  }
  return committed;
}

absl::StatusOr<TrainingPosition> CheckpointIo::LoadOwned(const fs::path& step_dir,
                                                         const data::DataLoader& data,
                                                         RankState state) {
  const int r = comm_.rank();
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  if (manifest->campaign != spec_.campaign.name) {
    return absl::FailedPreconditionError(Cat(step_dir.string(), ": checkpoint of campaign ",
                                             manifest->campaign, ", not ", spec_.campaign.name));
  }
  if (!manifest->shard_map) {
    return absl::FailedPreconditionError(
        Cat(step_dir.string(), "/manifest.json has no shard_map: written by an earlier format"));
  }
  const ckpt::ShardMap& map = *manifest->shard_map;
  // Rank 0 checks that every shard is there, so that a missing one is reported by name even
  // when no rank needs its ranges.
  if (r == 0) {
    if (absl::Status s = ckpt::CheckShardFiles(*manifest, step_dir); !s.ok()) return s;
  }
  ckpt::StepShards readers(step_dir, *manifest);
  // Step, model and data position, from the shard of old rank r mod W_old.
  absl::StatusOr<const ckpt::ShardReader*> first = readers.Of(r % manifest->world_size);
  if (!first.ok()) return first.status();
  absl::StatusOr<data::LoaderState> loader =
      CheckMetadata(**first, *manifest, step_dir, arch_, data);
  if (!loader.ok()) return loader.status();
  // (After the model record: another architecture is named as such, not as missing tensors.)
  if (absl::Status s = CheckShardMapTensors(map, arch_.tensors(), spec_.optimizer.name,
                                            Cat(step_dir.string(), "/manifest.json: shard_map"));
      !s.ok()) {
    return s;
  }

  // This rank's pieces of parameters and moments, from whichever shards hold them.
  const std::vector<model::TensorView>& tensors = arch_.tensors();
  std::vector<float*> dst(prefixes_.size());
  for (const OwnedPiece& p : owned_) {
    const model::TensorView& t = tensors[static_cast<size_t>(p.tensor)];
    const uint64_t in_tensor = OffsetInTensor(tensors, p);
    dst[0] = state.params + p.flat_offset;
    for (size_t k = 1; k < dst.size(); ++k) dst[k] = state.states[k - 1] + StateOffset(p);
    for (size_t k = 0; k < prefixes_.size(); ++k) {
      const std::string name = Cat(prefixes_[k], t.name);
      for (const ckpt::ShardRange& part :
           map.Find(name, in_tensor, static_cast<uint64_t>(p.size))) {
        absl::StatusOr<const ckpt::ShardReader*> rd = readers.Of(part.rank);
        if (!rd.ok()) return rd.status();
        absl::Status s = (*rd)->Read(
            name, part.offset, std::span<float>(dst[k] + (part.offset - in_tensor), part.count));
        if (!s.ok()) return s;
      }
    }
  }
  return TrainingPosition{manifest->step, loader->next_sequence};
}

absl::StatusOr<std::vector<int64_t>> CheckpointIo::CommittedSteps(const fs::path& root) {
  // Every rank lists the same directory; rank 0's list is used so that all try the same steps.
  absl::StatusOr<std::vector<int64_t>> steps = ckpt::ListCommittedSteps(root, spec_.campaign.name);
  if (absl::Status s = AgreeOnStatus(comm_, steps.status()); !s.ok()) return s;
  int64_t count = comm_.rank() == 0 ? static_cast<int64_t>(steps->size()) : 0;
  CheckCollective(comm_.Broadcast(std::as_writable_bytes(std::span(&count, 1)), 0), "broadcast");
  std::vector<int64_t> list(static_cast<size_t>(count), 0);
  if (comm_.rank() == 0) list = *steps;
  CheckCollective(comm_.Broadcast(std::as_writable_bytes(std::span(list)), 0), "broadcast");
  return list;
}

}  // namespace belay::train

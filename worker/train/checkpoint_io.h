// Checkpoint I/O of one rank among W: its shard of a step, written from the ranges it owns
// under the shard plan (standalone, with the manifest and the commit by rank 0), and the
// ranges it owns read back from a checkpoint written by any number of ranks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/campaign_spec.h"
#include "worker/ckpt/shard_file.h"
#include "worker/comm/communicator.h"
#include "worker/data/loader.h"
#include "worker/model/architecture.h"
#include "worker/train/shard_plan.h"
#include "worker/train/step_metrics.h"

namespace belay::train {

struct CheckpointInfo {
  std::filesystem::path step_dir;
  int64_t step = 0;
  int64_t bytes = 0;  // this rank's shard
  uint64_t xxh3 = 0;  // of this rank's shard file
  // The element ranges this rank's shard holds, by logical tensor (what belayd builds the
  // shard map from).
  struct Slice {
    std::string name;
    uint64_t offset = 0;
    uint64_t count = 0;
    uint64_t total = 0;  // elements of the whole logical tensor
  };
  std::vector<Slice> slices;
};

// Who commits a checkpoint. kCommit (standalone): the ranks write into a temporary step
// directory, rank 0 writes the manifest, renames the directory into place and applies
// retention. kShardsOnly (under belayd): the ranks write straight into step_<N>/ and stop
// there; each reports its shard, and belayd commits, writes the manifest and applies retention.
enum class SaveMode { kCommit, kShardsOnly };

// A save under way (CheckpointIo::BeginSave): this rank's state copied at the save step, its
// shard being written by a thread of its own while training goes on, until FinishSave. The
// writer's ranges of a background write point into `state`, which nothing else touches; the
// thread writes `written` and is joined before it is read (or when the save is dropped).
struct PendingSave {
  std::filesystem::path root;
  std::filesystem::path tmp;  // the directory the shard goes to
  SaveMode mode = SaveMode::kCommit;
  int64_t step = 0;
  int64_t next_sequence = 0;
  StepMetrics last;
  CheckpointInfo info;
  std::vector<float> state;  // background writes: this rank's pieces (parameters, states), copied
  ckpt::ShardWriter writer;
  absl::Status local;  // of the writer's Adds
  absl::StatusOr<ckpt::ShardFileInfo> written = absl::UnknownError("not written");
  std::thread thread;

  PendingSave() = default;
  PendingSave(const PendingSave&) = delete;
  PendingSave& operator=(const PendingSave&) = delete;
  ~PendingSave() {
    if (thread.joinable()) thread.join();
  }
};

// Host memory of one rank's checkpointed state: the parameters, whole (layout order), and
// the optimizer's states (optim::Optimizer::StateNames order), whole at stage 0 and the
// rank's shard at stages 1 and 2.
struct RankState {
  float* params = nullptr;
  std::vector<float*> states;
};

// Where training stands: the updates done and the next global training sequence.
struct TrainingPosition {
  int64_t step = 0;
  uint64_t next_sequence = 0;
};

// The reading and writing of one rank's checkpoint shards; the caller holds the state and
// brings it to and from the device. Every collective call must be made by every rank.
class CheckpointIo {
 public:
  // Keeps references to all four.
  CheckpointIo(const CampaignSpec& spec, comm::Communicator& comm, const model::Architecture& arch,
               const ShardPlan& plan);

  // Prepares the step directory of `at.step` (rank 0; a step already there, of an abandoned
  // trajectory, is replaced) and starts this rank's shard: with `background` from a copy of
  // its ranges written by a thread of its own, else written at once. `loader` is the data
  // loader's state to record. Collective.
  absl::StatusOr<std::unique_ptr<PendingSave>> BeginSave(const std::filesystem::path& root,
                                                         const StepMetrics& last, SaveMode mode,
                                                         bool background, TrainingPosition at,
                                                         const data::LoaderState& loader,
                                                         RankState state);
  // Waits for the write, agrees on the outcome and, with kCommit, writes the manifest with
  // the shard map, commits and applies retention. Errors leave no partial step behind.
  // Collective.
  absl::StatusOr<CheckpointInfo> FinishSave(PendingSave& save);

  // This rank's part of a load: reads the ranges it owns from whichever shards of the step
  // directory hold them (each verified by checksum and against the manifest's shard map; the
  // model shape and the data fingerprint checked against `data`) into `state`, and returns
  // where training stands there. Not collective: the caller agrees on the outcome and
  // gathers what other ranks read.
  absl::StatusOr<TrainingPosition> LoadOwned(const std::filesystem::path& step_dir,
                                             const data::DataLoader& data, RankState state);

  // The committed steps of this campaign under a checkpoint root, oldest first, as rank 0
  // lists them, so that all ranks try the same ones. Collective.
  absl::StatusOr<std::vector<int64_t>> CommittedSteps(const std::filesystem::path& root);

 private:
  // Offset of an owned piece in this rank's moment buffers.
  int64_t StateOffset(const OwnedPiece& p) const {
    return spec_.train.zero_stage == 0 ? p.flat_offset : p.shard_offset;
  }
  // Adds this rank's ranges to the save's writer (copied into save.state with `background`).
  void AddRanges(PendingSave& save, bool background, RankState state) const;
  // Rank 0, standalone: the manifest of the save's step (`sums`: every rank's shard bytes and
  // xxh3, in rank order), then the commit and retention.
  absl::Status Commit(const PendingSave& save, const std::vector<int64_t>& sums) const;

  const CampaignSpec& spec_;
  comm::Communicator& comm_;
  const model::Architecture& arch_;
  const ShardPlan& plan_;
  std::vector<OwnedPiece> owned_;      // this rank's pieces, in shard order
  std::vector<std::string> prefixes_;  // "param/", then each optimizer state's
};

}  // namespace belay::train

// The training state and step of one rank among W data-parallel ranks: its part of every
// global batch, Goldfish masks, forward and backward over micro-batches with the gradient
// reduction of the campaign's ZeRO stage (gradient_sync.h), the sharded optimizer,
// evaluation, and checkpoints that any world size can load (checkpoint_io.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/campaign_spec.h"
#include "worker/comm/communicator.h"
#include "worker/data/loader.h"
#include "worker/model/architecture.h"
#include "worker/model/gpu_model.h"
#include "worker/optim/optimizer.h"
#include "worker/train/checkpoint_io.h"
#include "worker/train/gradient_device.h"
#include "worker/train/gradient_sync.h"
#include "worker/train/shard_plan.h"
#include "worker/train/step_metrics.h"
#include "worker/train/step_phase.h"

namespace belay::train {

// Bytes this rank holds for training state and the model's activations.
struct MemoryAccounting {
  int64_t params = 0;     // the full fp32 parameters every rank computes with
  int64_t gradients = 0;  // gradient buffers kept between steps or during backward
  int64_t optimizer = 0;  // the optimizer's states (AdamW: m, v; AdEMAMix: three)
  // The CPU model's activation and scratch buffers for one micro-batch; 0 on GPUs, where
  // they are not counted.
  int64_t activations = 0;
};

// Where the model computes. kCuda: the current CUDA device (chosen by the caller), bf16
// mixed precision (model::GpuModel); the communicator's float collectives must then take
// device memory (NCCL), or be single-rank. Data, bookkeeping and checkpoints are the same as
// on the CPU, so either can resume the other's checkpoints.
enum class Device { kCpu, kCuda };

class Trainer {
 public:
  // Opens the data and sets up a freshly initialised model (seeded by train.seed), for rank
  // comm.rank() of comm.world_size(). Every rank of the group must call it (the ranks check
  // together that they agree). InvalidArgument when the global batch does not divide into
  // micro_batch × world size, or for a ZeRO stage this trainer does not have (it has 0, 1
  // and 2, on CPUs and GPUs), or on kCuda with a communicator whose collectives take host
  // memory. On kCuda the model is created on the current device; not fitting there is
  // ResourceExhausted, a build without CUDA Unimplemented, and so are a model other than
  // GPT-2 and an optimizer other than AdamW (the GPU path has those only).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const CampaignSpec& spec,
                                                         comm::Communicator& comm,
                                                         Device device = Device::kCpu);

  // Replaces the state with a checkpoint, which may have been written by any number of
  // ranks: `dir` is a step directory (holding manifest.json), or a checkpoint root whose
  // newest committed step of this campaign that loads is used (older ones are tried when a
  // newer one fails, each failure logged). Each rank reads the element ranges it owns from
  // whichever shards hold them, verifying every shard it opens by checksum and against the
  // manifest's shard map; the model shape and the data fingerprint are checked too. All
  // ranks agree on the outcome: if one rank fails, all do, with that rank's error. Collective.
  absl::Status Resume(const std::filesystem::path& dir);

  ~Trainer();

  int64_t step() const { return step_; }
  const CampaignSpec& spec() const { return spec_; }
  int rank() const { return comm_.rank(); }
  int world_size() const { return comm_.world_size(); }
  int64_t grad_accum_steps() const { return accum_; }
  const ShardPlan& plan() const { return plan_; }
  MemoryAccounting memory() const;
  Device device() const { return gpu_ ? Device::kCuda : Device::kCpu; }
  // The GPU model (kCuda), else null.
  const model::GpuModel* gpu() const { return gpu_.get(); }

  // One optimizer update over one global batch. Collective. Aborts the process if a
  // collective fails: the ranks' states can no longer be trusted to agree.
  StepMetrics TrainStep();

  // Mean loss over eval_batches micro-batches of the validation split (always the same
  // sequences, shared out over the ranks), no Goldfish masking (end-of-document positions
  // are not counted under document masking). Requires validation data.
  // The same value on every rank and for every world size. Collective.
  double Evaluate();

  // Writes the full state under `root` (each rank its shard; with kCommit also rank 0 the
  // manifest with the shard map, then the commit) and returns this rank's shard. Collective;
  // every rank gets the same outcome. A step directory already there (an abandoned
  // trajectory's, after a rollback) is replaced.
  absl::StatusOr<CheckpointInfo> SaveCheckpoint(const std::filesystem::path& root,
                                                const StepMetrics& last,
                                                SaveMode mode = SaveMode::kCommit);
  // SaveCheckpoint in two halves, for checkpoint.async: BeginSave (collective) prepares the
  // step directory and, with `background`, copies this rank's state (parameters, moments) to
  // host memory of the save's own and writes the shard from it on a thread of its own, so
  // training may go on meanwhile; without, it writes the shard at once. FinishSave
  // (collective: every rank at the same step) waits for the write, agrees on the outcome and,
  // with kCommit, writes the manifest and commits, exactly as SaveCheckpoint: the files are
  // the same bytes either way. Errors of either half leave no partial step behind.
  absl::StatusOr<std::unique_ptr<PendingSave>> BeginSave(const std::filesystem::path& root,
                                                         const StepMetrics& last, SaveMode mode,
                                                         bool background);
  absl::StatusOr<CheckpointInfo> FinishSave(PendingSave& save);

  const std::vector<float>& params() const { return params_; }

  // The phase this rank is in; updated by TrainStep, Evaluate and SaveCheckpoint, readable
  // from any thread.
  Phase phase() const { return progress_.phase.load(std::memory_order_relaxed); }

  // Fault injection for tests of the NaN path: makes the next step's loss non-finite (a
  // parameter of the final norm becomes NaN on this rank). Every rank must call it.
  void PoisonParametersForTesting();

 private:
  Trainer(const CampaignSpec& spec, comm::Communicator& comm, Device device,
          std::unique_ptr<const model::Architecture> arch, std::unique_ptr<data::DataLoader> train,
          std::unique_ptr<data::DataLoader> val);

  // Device state <-> the host copies checkpoints are written from and loaded into.
  void PullFromGpu();
  void PushToGpu();
  // Loads one step directory (see Resume). Collective.
  absl::Status LoadStep(const std::filesystem::path& step_dir);
  // The host copies checkpoints are written from and loaded into.
  RankState HostState();
  // Restores the freshly initialised state after a failed load.
  void Reinitialize();

  // The model on the current GPU with this rank's state, and its gradient synchroniser.
  absl::Status StartGpu();
  // Every rank's slice of every bucket of `flat` (laid out like the parameters) from its
  // owner to all ranks: after it, all ranks hold the owners' values. Collective.
  absl::Status GatherFlat(float* flat);

  // The phases of TrainStep. Over the whole global batch (all ranks): counted label
  // positions, Goldfish-dropped ones, and the data digest.
  struct BatchTotals {
    int64_t counted = 0;
    int64_t dropped = 0;
    int64_t digest = 0;
  };
  // Clears the mask (T positions of sequence `seq`) where the input is the end-of-document
  // token, under data.document_masking: the loss there is not counted.
  void MaskDocumentEnds(const int32_t* seq, uint8_t* mask, int T) const;
  // Reads this rank's sequences of the step and their masks. Collective.
  BatchTotals LoadBatch();
  // Micro-batch `micro`: its summed loss, and (with scale > 0) what backward needs.
  double Forward(int64_t micro, float scale);
  // Its backward pass, told the synchroniser's hook; after the last micro-batch, the
  // gradient reduction. Collective.
  void BackwardAndReduce(int64_t micro, float scale);
  // The step's loss sum over all ranks, in global micro-batch order. Collective.
  double SumLosses(const std::vector<double>& micro_loss);
  // Clipping, the optimizer's update number step_ + 1, and the parameters to all ranks.
  // Collective.
  void Update(double lr, double grad_norm);
  // Every rank's bytes sent and times since t0. Collective.
  StepMetrics StepBookkeeping(std::chrono::steady_clock::time_point t0, int64_t sent_before);

  CampaignSpec spec_;
  comm::Communicator& comm_;
  std::unique_ptr<const model::Architecture> arch_;
  ShardPlan plan_;
  std::vector<OwnedPiece> owned_;  // this rank's pieces, in shard order
  std::unique_ptr<data::DataLoader> train_data_;
  std::unique_ptr<data::DataLoader> val_data_;  // null without validation data
  std::unique_ptr<model::CpuModel> model_;      // kCpu
  std::unique_ptr<model::GpuModel> gpu_;        // kCuda
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::vector<float> params_;
  std::vector<float> staging_;  // one padded bucket, for GatherFlat
  CheckpointIo checkpoints_;
  StepProgress progress_;
  std::unique_ptr<GradientDevice> gradients_;  // where the gradients live
  std::unique_ptr<GradientSync> sync_;         // the ZeRO stage's gradient path
  int64_t step_ = 0;                           // updates done
  uint64_t next_sequence_ = 0;                 // global index of the next training sequence
  int64_t accum_ = 1;                          // micro-batches per update on this rank

  // Per-step scratch: the tokens and masks of this rank's micro-batches of one update.
  std::vector<int32_t> seqs_, inputs_, targets_;
  std::vector<uint8_t> masks_;
};

}  // namespace belay::train

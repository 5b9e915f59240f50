// The training loop of one rank: batches from the loader, Goldfish masks, forward/backward
// over micro-batches, gradient clipping, AdamW, evaluation, checkpoints.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/campaign_spec.h"
#include "worker/data/loader.h"
#include "worker/model/gpt2.h"
#include "worker/model/params.h"
#include "worker/optim/optimizer.h"

namespace belay::train {

struct StepMetrics {
  int64_t step = 0;           // updates done after this one (1-based)
  double loss = 0;            // mean cross-entropy over the counted positions of the batch
  double lr = 0;              // learning rate of this update
  double grad_norm = 0;       // global L2 norm before clipping
  double tokens_per_s = 0;    // batch tokens / step wall time
  double goldfish_dropped = 0;  // fraction of label positions Goldfish excluded
  double step_time_s = 0;
};

struct CheckpointInfo {
  std::filesystem::path step_dir;
  int64_t step = 0;
  int64_t bytes = 0;
};

class Trainer {
 public:
  // Opens the data and sets up a freshly initialised model (seeded by train.seed). The
  // world is one rank for now.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const CampaignSpec& spec);

  // Replaces the state with a checkpoint: `dir` is a step directory (holding manifest.json),
  // or a checkpoint root whose newest committed step of this campaign that verifies is
  // used (older ones are tried when a newer one fails, each failure logged). Every shard's
  // checksum, the model shape and the data fingerprint are checked before use.
  absl::Status Resume(const std::filesystem::path& dir);

  int64_t step() const { return step_; }
  const CampaignSpec& spec() const { return spec_; }

  // One optimizer update over one global batch.
  StepMetrics TrainStep();

  // Mean loss over eval_batches micro-batches of the validation split (always the same
  // sequences), no Goldfish masking. Requires validation data.
  double Evaluate();

  // Writes the full state as a committed checkpoint under `root` and returns where.
  absl::StatusOr<CheckpointInfo> SaveCheckpoint(const std::filesystem::path& root,
                                                const StepMetrics& last);

  const std::vector<float>& params() const { return params_; }

 private:
  // Loads one step directory: manifest, checksum-verified shard, model shape, data.
  absl::Status LoadStep(const std::filesystem::path& step_dir);

  Trainer(const CampaignSpec& spec, std::unique_ptr<data::DataLoader> train,
          std::unique_ptr<data::DataLoader> val);

  CampaignSpec spec_;
  model::ParameterLayout layout_;
  std::unique_ptr<data::DataLoader> train_data_;
  std::unique_ptr<data::DataLoader> val_data_;  // null without validation data
  model::Gpt2 model_;
  optim::AdamW optimizer_;
  std::vector<float> params_, grads_;
  int64_t step_ = 0;             // updates done
  uint64_t next_sequence_ = 0;  // global index of the next training sequence
  int64_t accum_ = 1;            // micro-batches per update on this rank

  // Per-step scratch: the tokens and masks of all micro-batches of one update.
  std::vector<int32_t> seqs_, inputs_, targets_;
  std::vector<uint8_t> masks_;
};

}  // namespace belay::train

// One rank's training step: data parallelism with ZeRO stages 0, 1 and 2, in three phases
// (forward; backward with the gradient reduction; the update), as llm.c's trainer has them.
#include "worker/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "kernels/grad_norm.h"
#include "spdlog/spdlog.h"
#include "worker/model/goldfish.h"
#include "worker/model/schedule.h"
#include "worker/train/rank_agreement.h"

namespace belay::train {
namespace {

namespace fs = std::filesystem;

// A hash of one training sequence's tokens: 32 bits, so a batch's sum cannot overflow.
uint64_t SequenceHash(const int32_t* seq, int T) {
  return Xxh3(std::as_bytes(std::span(seq, static_cast<size_t>(T + 1)))) >> 32;
}

// Why this rank cannot train `spec` on `device` with `comm`; OK when it can.
absl::Status CheckSetup(const CampaignSpec& spec, const comm::Communicator& comm, Device device) {
  const int W = comm.world_size();
  if (spec.grad_accum_steps(W) == 0) {
    return absl::InvalidArgumentError(
        Cat("train.global_batch = ", spec.train.global_batch, " does not divide into micro_batch ",
            spec.train.micro_batch, " × ", W, " ranks = ", spec.train.micro_batch * W,
            " sequences per micro-step; choose a global batch that is a multiple of it"));
  }
  if (spec.train.zero_stage < 0 || spec.train.zero_stage > 2) {
    return absl::InvalidArgumentError(
        Cat("train.zero_stage = ", spec.train.zero_stage, ": this trainer has stages 0, 1 and 2"));
  }
  if (device == Device::kCuda && spec.model.arch != ModelArch::kGpt2) {
    return absl::UnimplementedError(Cat("model.arch = \"", ToString(spec.model.arch),
                                        "\" has no GPU model yet; train it on CPUs"));
  }
  if (device == Device::kCuda && spec.optimizer.name != OptimizerKind::kAdamW) {
    return absl::UnimplementedError(Cat("optimizer.name = \"", ToString(spec.optimizer.name),
                                        "\" has no GPU update yet; the GPU path has adamw"));
  }
  if (device == Device::kCuda && !comm.takes_device_memory()) {
    return absl::InvalidArgumentError(
        "GPU training needs a communicator whose collectives take device memory (NCCL), even for "
        "one rank");
  }
  return absl::OkStatus();
}

// The campaign's training data, and its validation data when it has some (else `val` stays
// null).
absl::Status OpenData(const CampaignSpec& spec, std::unique_ptr<data::DataLoader>& train,
                      std::unique_ptr<data::DataLoader>& val) {
  data::DataLoaderOptions opts;
  opts.globs = spec.data.train;
  opts.seq_len = spec.model.seq_len;
  opts.vocab_size = spec.model.vocab_size;
  opts.seed = spec.train.seed;
  opts.shuffle = spec.data.shuffle;
  opts.format = spec.data.format == DataFormat::kMegatron ? data::ShardFormat::kMegatron
                                                          : data::ShardFormat::kLlmc;
  absl::StatusOr<std::unique_ptr<data::DataLoader>> t = data::DataLoader::Open(opts);
  if (!t.ok()) return t.status();
  train = std::move(*t);
  if (spec.data.val.empty()) return absl::OkStatus();
  opts.globs = spec.data.val;
  opts.shuffle = false;  // evaluation always reads the same sequences
  absl::StatusOr<std::unique_ptr<data::DataLoader>> v = data::DataLoader::Open(opts);
  if (!v.ok()) return v.status();
  val = std::move(*v);
  return absl::OkStatus();
}

// All ranks must train on the same data: compares what each one opened. Collective.
absl::Status CheckSameData(comm::Communicator& comm, uint64_t fingerprint) {
  std::vector<int64_t> prints(static_cast<size_t>(comm.world_size()));
  const int64_t mine = static_cast<int64_t>(fingerprint);
  CheckCollective(comm.AllGatherInt64(std::span(&mine, 1), prints), "all-gather");
  for (int r = 0; r < comm.world_size(); ++r) {
    if (prints[static_cast<size_t>(r)] != prints[0]) {
      return absl::FailedPreconditionError(Cat(
          "rank ", r, " opened different training data than rank 0 (fingerprint ",
          FormatXxh3(static_cast<uint64_t>(prints[static_cast<size_t>(r)])), " vs ",
          FormatXxh3(static_cast<uint64_t>(prints[0])), "); every rank must see the same shards"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const CampaignSpec& spec,
                                                         comm::Communicator& comm, Device device) {
  absl::Status local = CheckSetup(spec, comm, device);
  std::unique_ptr<const model::Architecture> arch;
  if (local.ok()) {
    absl::StatusOr<std::unique_ptr<const model::Architecture>> a =
        model::Architecture::FromSpec(spec);
    local = a.status();
    if (a.ok()) arch = std::move(*a);
  }
  std::unique_ptr<data::DataLoader> train, val;
  if (local.ok()) local = OpenData(spec, train, val);
  if (absl::Status s = AgreeOnStatus(comm, local); !s.ok()) return s;
  if (absl::Status s = CheckSameData(comm, train->fingerprint()); !s.ok()) return s;
  std::unique_ptr<Trainer> trainer(
      new Trainer(spec, comm, device, std::move(arch), std::move(train), std::move(val)));
  if (device == Device::kCuda) {
    if (absl::Status s = AgreeOnStatus(comm, trainer->StartGpu()); !s.ok()) return s;
  }
  return trainer;
}

absl::Status Trainer::StartGpu() {
  // The model on this rank's GPU, with the freshly initialised parameters; at stages 1 and
  // 2 it keeps the optimizer state of this rank's pieces only, at stage 2 no whole gradient
  // either (a buffer per bucket: buckets are the model's gradient groups, in order).
  const int stage = spec_.train.zero_stage;
  model::ShardedOptimizer shard;
  if (stage > 0) {
    shard.shard_size = plan_.shard_size();
    for (const optim::UpdatePiece& p : optimizer_->pieces()) {
      shard.pieces.push_back({p.param_offset, p.state_offset, p.size, p.decay});
    }
    for (const Bucket& b : plan_.buckets()) {
      if (stage == 1) {
        shard.staging = std::max(shard.staging, b.padded);
      } else {
        shard.group_padded.push_back(b.padded);
      }
    }
  }
  absl::StatusOr<std::unique_ptr<model::GpuModel>> gpu =
      model::CreateGpuModel(*arch_->gpt2(), static_cast<int>(spec_.train.micro_batch),
                            static_cast<int>(spec_.model.seq_len), stage > 0 ? &shard : nullptr);
  if (!gpu.ok()) return gpu.status();
  gpu_ = std::move(*gpu);
  if (absl::Status s = gpu_->SetState(params_.data(), nullptr, nullptr); !s.ok()) return s;
  gradients_ = MakeGpuGradients(plan_, stage, *gpu_, comm_);
  sync_ = MakeGradientSync(stage, plan_, owned_, comm_, *gradients_, progress_);
  return absl::OkStatus();
}

Trainer::Trainer(const CampaignSpec& spec, comm::Communicator& comm, Device device,
                 std::unique_ptr<const model::Architecture> arch,
                 std::unique_ptr<data::DataLoader> train, std::unique_ptr<data::DataLoader> val)
    : spec_(spec),
      comm_(comm),
      arch_(std::move(arch)),
      plan_(arch_->GradientGroups(), comm.world_size()),
      owned_(plan_.Owned(comm.rank())),
      train_data_(std::move(train)),
      val_data_(std::move(val)),
      model_(device == Device::kCpu ? arch_->NewCpuModel(static_cast<int>(spec.train.micro_batch),
                                                         static_cast<int>(spec.model.seq_len))
                                    : nullptr),
      params_(static_cast<size_t>(arch_->total())),
      checkpoints_(spec_, comm, *arch_, plan_) {
  arch_->Init(params_, spec.train.seed);
  accum_ = spec.grad_accum_steps(comm.world_size());
  const int stage = spec.train.zero_stage;
  if (stage == 0) {
    optimizer_ = std::make_unique<optim::Optimizer>(optim::WholeTensors(arch_->tensors()),
                                                    arch_->total(), spec.train, spec.optimizer);
  } else {
    std::vector<optim::UpdatePiece> pieces;
    for (const OwnedPiece& p : owned_) {
      pieces.push_back({p.flat_offset, p.shard_offset, p.size,
                        arch_->tensors()[static_cast<size_t>(p.tensor)].decay});
    }
    optimizer_ = std::make_unique<optim::Optimizer>(std::move(pieces), plan_.shard_size(),
                                                    spec.train, spec.optimizer);
  }
  // (On GPUs, StartGpu makes them once the model is on the device.)
  if (device == Device::kCpu) {
    gradients_ = MakeHostGradients(plan_, comm.rank(), stage, params_.data());
    sync_ = MakeGradientSync(stage, plan_, owned_, comm_, *gradients_, progress_);
  }
  int64_t largest = 0;
  for (const Bucket& b : plan_.buckets()) largest = std::max(largest, b.padded);
  staging_.resize(static_cast<size_t>(largest));

  const size_t M = static_cast<size_t>(spec.train.micro_batch);
  const size_t T = static_cast<size_t>(spec.model.seq_len);
  const size_t A = static_cast<size_t>(accum_);
  seqs_.resize(A * M * (T + 1));
  inputs_.resize(A * M * T);
  targets_.resize(A * M * T);
  masks_.resize(A * M * T);
}

Trainer::~Trainer() = default;

MemoryAccounting Trainer::memory() const {
  MemoryAccounting m;
  m.gradients = gradients_->bytes();
  if (gpu_) {
    // On the device: the bf16 parameters and the fp32 master weights; the moments. Stages 1
    // and 2 shard the fp32 state.
    const int64_t P = arch_->total(), f = static_cast<int64_t>(sizeof(float));
    const int64_t state = spec_.train.zero_stage > 0 ? plan_.shard_size() : P;
    m.params = 2 * P + f * state;
    m.optimizer = 2 * f * state;
    return m;
  }
  m.params = static_cast<int64_t>(params_.size() * sizeof(float));
  m.optimizer = optimizer_->state_bytes();
  m.activations = model_->ActivationBytes();
  return m;
}

absl::Status Trainer::GatherFlat(float* flat) {
  const int r = comm_.rank();
  for (size_t b = 0; b < plan_.buckets().size(); ++b) {
    const Bucket& bucket = plan_.buckets()[b];
    std::span<float> all(staging_.data(), static_cast<size_t>(bucket.padded));
    std::span<float> mine =
        all.subspan(static_cast<size_t>(r * bucket.slice), static_cast<size_t>(bucket.slice));
    std::fill(mine.begin(), mine.end(), 0.0f);
    for (const OwnedPiece& p : plan_.OwnedInBucket(b, r)) {
      std::memcpy(mine.data() + (p.shard_offset - bucket.shard_offset), flat + p.flat_offset,
                  static_cast<size_t>(p.size) * sizeof(float));
    }
    // (GPU ranks: NCCL's float collectives take device memory; these are host bytes.)
    absl::Status s = gpu_ ? comm_.AllGatherBytes(std::as_bytes(mine), std::as_writable_bytes(all))
                          : comm_.AllGather(mine, all);
    if (!s.ok()) return s;
    plan_.Unpack(b, staging_.data(), flat);
  }
  return absl::OkStatus();
}

StepMetrics Trainer::TrainStep() {
  const auto t0 = std::chrono::steady_clock::now();
  progress_.wait_s = 0;
  const int64_t sent_before = comm_.bytes_sent().total_bytes();
  const BatchTotals totals = LoadBatch();
  // The loss is the mean over the batch's counted positions, so every micro-batch's summed
  // loss is scaled by the same 1/counted.
  const float scale = totals.counted > 0 ? 1.0f / static_cast<float>(totals.counted) : 0.0f;

  std::vector<double> micro_loss(static_cast<size_t>(accum_));
  sync_->BeginStep();
  for (int64_t a = 0; a < accum_; ++a) {
    micro_loss[static_cast<size_t>(a)] = Forward(a, scale);
    BackwardAndReduce(a, scale);
  }
  const double loss_sum = SumLosses(micro_loss);
  const double grad_norm = std::sqrt(sync_->SquaredNorm());
  const double lr = model::LearningRate(spec_.train, spec_.total_steps(), step_ + 1);
  Update(lr, grad_norm);

  ++step_;
  next_sequence_ += static_cast<uint64_t>(spec_.train.global_batch);
  StepMetrics m = StepBookkeeping(t0, sent_before);
  const int T = static_cast<int>(spec_.model.seq_len);
  m.step = step_;
  m.loss = totals.counted > 0 ? loss_sum / static_cast<double>(totals.counted) : 0.0;
  m.lr = lr;
  m.grad_norm = grad_norm;
  const int64_t positions = spec_.train.global_batch * T;
  m.goldfish_dropped = static_cast<double>(totals.dropped) / static_cast<double>(positions);
  m.tokens = static_cast<int64_t>(next_sequence_) * T;
  m.data_digest = static_cast<uint64_t>(totals.digest);
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.tokens_per_s = m.step_time_s > 0 ? static_cast<double>(positions) / m.step_time_s : 0.0;
  return m;
}

Trainer::BatchTotals Trainer::LoadBatch() {
  const int T = static_cast<int>(spec_.model.seq_len);
  const int M = static_cast<int>(spec_.train.micro_batch);
  const int W = comm_.world_size(), r = comm_.rank();
  // This rank's sequences and masks for the whole step first: the loss is normalised by the
  // counted positions of the whole global batch, which all ranks must know before any
  // backward pass. Sequence numbers are global (data::MicroBatchStart), so the global batch
  // is the same whatever the number of ranks.
  progress_.phase = Phase::kData;
  int64_t totals[3] = {0, 0, 0};  // counted positions, Goldfish-dropped positions, data digest
  for (int64_t a = 0; a < accum_; ++a) {
    for (int i = 0; i < M; ++i) {
      size_t row = static_cast<size_t>(a) * static_cast<size_t>(M) + static_cast<size_t>(i);
      int32_t* seq = seqs_.data() + row * static_cast<size_t>(T + 1);
      train_data_->Sequence(
          data::MicroBatchStart(next_sequence_, M, W, a, r) + static_cast<uint64_t>(i), seq);
      totals[2] += static_cast<int64_t>(SequenceHash(seq, T));
      std::copy(seq, seq + T, inputs_.data() + row * static_cast<size_t>(T));
      std::copy(seq + 1, seq + T + 1, targets_.data() + row * static_cast<size_t>(T));
      uint8_t* mask = masks_.data() + row * static_cast<size_t>(T);
      if (spec_.train.goldfish) {
        totals[1] +=
            model::GoldfishMask(seq, T, spec_.train.goldfish->k, spec_.train.goldfish->h, mask);
      } else {
        std::fill(mask, mask + T, uint8_t{1});
      }
      MaskDocumentEnds(seq, mask, T);
      totals[0] += std::count(mask, mask + T, uint8_t{1});
    }
  }
  {
    WaitClock clock(progress_.wait_s);
    CheckCollective(comm_.AllReduceSumInt64(totals), "all-reduce of batch counts");
  }
  return {totals[0], totals[1], totals[2]};
}

double Trainer::Forward(int64_t micro, float scale) {
  const size_t off = static_cast<size_t>(micro) * static_cast<size_t>(spec_.train.micro_batch) *
                     static_cast<size_t>(spec_.model.seq_len);
  progress_.phase = Phase::kForward;
  if (!gpu_) {
    return model_->Forward(params_.data(), inputs_.data() + off, targets_.data() + off,
                           masks_.data() + off);
  }
  absl::StatusOr<double> l =
      gpu_->Forward(inputs_.data() + off, targets_.data() + off, masks_.data() + off, scale);
  CheckCollective(l.status(), "GPU forward");
  return *l;
}

void Trainer::BackwardAndReduce(int64_t micro, float scale) {
  progress_.phase = Phase::kBackward;
  const bool last = micro + 1 == accum_;
  model::BackwardHook* hook = sync_->HookFor(micro, last);
  if (gpu_) {
    // (A batch with no counted position has scale 0: Forward only evaluated, the gradient is
    // 0, and the synchroniser reduces it without a backward pass.)
    if (scale > 0) CheckCollective(gpu_->Backward(hook), "GPU backward");
  } else {
    std::span<float> whole = gradients_->Whole();
    float* grads = whole.empty() ? nullptr : whole.data();
    if (hook != nullptr) {
      CheckCollective(model_->Backward(params_.data(), grads, scale, *hook), "backward");
    } else {
      model_->Backward(params_.data(), grads, scale);
    }
  }
  if (!last) return;
  progress_.phase = Phase::kCollective;
  sync_->Reduce();
}

double Trainer::SumLosses(const std::vector<double>& micro_loss) {
  const int W = comm_.world_size();
  std::vector<double> all(static_cast<size_t>(accum_ * W));
  {
    WaitClock clock(progress_.wait_s);
    CheckCollective(comm_.AllGatherBytes(std::as_bytes(std::span(micro_loss)),
                                         std::as_writable_bytes(std::span(all))),
                    "all-gather of losses");
  }
  // Micro-batch sums added in global micro-batch order (micro-step a of rank r is micro-batch
  // a·W + r), the order one rank adds them in, so the value does not depend on W.
  double sum = 0;
  for (int64_t a = 0; a < accum_; ++a) {
    for (int q = 0; q < W; ++q) sum += all[static_cast<size_t>(q * accum_ + a)];
  }
  return sum;
}

void Trainer::Update(double lr, double grad_norm) {
  const float clip = kernels::cpu::ClipFactor(grad_norm, spec_.train.grad_clip);
  progress_.phase = Phase::kOptimizer;
  if (gpu_) {
    const kernels::cpu::AdamWParams p = optimizer_->AdamWParams(lr, step_ + 1);
    const auto wd = static_cast<float>(spec_.train.weight_decay);
    CheckCollective(
        spec_.train.zero_stage == 0 ? gpu_->Update(p, wd, clip) : gpu_->UpdateShard(p, wd, clip),
        "GPU update");
    CheckCollective(gpu_->Synchronize(), "GPU update");
  } else {
    std::span<float> g = sync_->OwnedGradients();
    if (clip < 1.0f) kernels::cpu::Scale(g.data(), static_cast<int64_t>(g.size()), clip);
    optimizer_->Update(params_.data(), g.data(), lr, step_ + 1);
  }
  // Stages 1 and 2 updated only this rank's shard: bring every rank's update to all.
  progress_.phase = Phase::kCollective;
  sync_->GatherParameters();
  progress_.phase = Phase::kData;
}

StepMetrics Trainer::StepBookkeeping(std::chrono::steady_clock::time_point t0,
                                     int64_t sent_before) {
  // Every rank's bytes sent, wall time and time outside collectives, gathered: one small
  // collective for the step's bookkeeping (not counted in comm_bytes).
  const int W = comm_.world_size();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t mine[3] = {comm_.bytes_sent().total_bytes() - sent_before,
                           static_cast<int64_t>(wall * 1e9),
                           static_cast<int64_t>(std::max(0.0, wall - progress_.wait_s) * 1e9)};
  std::vector<int64_t> every(static_cast<size_t>(3 * W));
  CheckCollective(comm_.AllGatherInt64(mine, every), "all-gather of step bookkeeping");
  StepMetrics m;
  for (int q = 0; q < W; ++q) {
    m.comm_bytes += every[static_cast<size_t>(3 * q)];
    m.rank_step_time_s.push_back(static_cast<double>(every[static_cast<size_t>(3 * q + 1)]) * 1e-9);
    m.rank_compute_time_s.push_back(static_cast<double>(every[static_cast<size_t>(3 * q + 2)]) *
                                    1e-9);
  }
  return m;
}

double Trainer::Evaluate() {
  const int T = static_cast<int>(spec_.model.seq_len);
  const int M = static_cast<int>(spec_.train.micro_batch);
  const int W = comm_.world_size(), r = comm_.rank();
  const int64_t batches = spec_.train.eval_batches;
  std::vector<int32_t> seq(static_cast<size_t>(T + 1));
  std::vector<int32_t> inputs(static_cast<size_t>(M * T)), targets(inputs.size());
  std::vector<uint8_t> mask(inputs.size(), 1);
  progress_.phase = Phase::kEval;
  // Batch b is evaluated by rank b mod W; the per-batch sums and counted positions then add
  // in batch order.
  std::vector<double> mine(static_cast<size_t>(2 * batches), 0.0);
  for (int64_t b = r; b < batches; b += W) {
    for (int i = 0; i < M; ++i) {
      uint64_t g = static_cast<uint64_t>(b * M + i);
      val_data_->Sequence(g % val_data_->sequences_per_epoch(), seq.data());
      std::copy(seq.begin(), seq.begin() + T, inputs.begin() + i * T);
      std::copy(seq.begin() + 1, seq.end(), targets.begin() + i * T);
      std::fill(mask.begin() + i * T, mask.begin() + (i + 1) * T, uint8_t{1});
      MaskDocumentEnds(seq.data(), mask.data() + i * T, T);
    }
    mine[static_cast<size_t>(batches + b)] =
        static_cast<double>(std::count(mask.begin(), mask.end(), uint8_t{1}));
    if (gpu_) {
      absl::StatusOr<double> l = gpu_->Forward(inputs.data(), targets.data(), mask.data(), 0.0f);
      CheckCollective(l.status(), "GPU evaluation");
      mine[static_cast<size_t>(b)] = *l;
    } else {
      mine[static_cast<size_t>(b)] =
          model_->Forward(params_.data(), inputs.data(), targets.data(), mask.data());
    }
  }
  std::vector<double> all(static_cast<size_t>(2 * batches * W));
  CheckCollective(
      comm_.AllGatherBytes(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all))),
      "all-gather of evaluation losses");
  double sum = 0, counted = 0;
  for (int64_t b = 0; b < batches; ++b) {
    const size_t at = static_cast<size_t>((b % W) * 2 * batches + b);
    sum += all[at];
    counted += all[at + static_cast<size_t>(batches)];
  }
  return counted > 0 ? sum / counted : 0.0;
}

void Trainer::MaskDocumentEnds(const int32_t* seq, uint8_t* mask, int T) const {
  // (The model masks the same positions itself; the trainer must know them to normalise.)
  if (!spec_.data.document_masking) return;
  model::ApertusLossMask(mask, seq, mask, T, static_cast<int32_t>(spec_.data.eod_token));
}

absl::StatusOr<CheckpointInfo> Trainer::SaveCheckpoint(const fs::path& root,
                                                       const StepMetrics& last, SaveMode mode) {
  absl::StatusOr<std::unique_ptr<PendingSave>> save =
      BeginSave(root, last, mode, /*background=*/false);
  if (!save.ok()) return save.status();
  return FinishSave(**save);
}

absl::StatusOr<std::unique_ptr<PendingSave>> Trainer::BeginSave(const fs::path& root,
                                                                const StepMetrics& last,
                                                                SaveMode mode, bool background) {
  const Phase was = progress_.phase.exchange(Phase::kCheckpoint);
  if (gpu_) PullFromGpu();
  absl::StatusOr<std::unique_ptr<PendingSave>> save =
      checkpoints_.BeginSave(root, last, mode, background, {step_, next_sequence_},
                             train_data_->State(next_sequence_), HostState());
  progress_.phase = was;
  return save;
}

absl::StatusOr<CheckpointInfo> Trainer::FinishSave(PendingSave& save) {
  const Phase was = progress_.phase.exchange(Phase::kCheckpoint);
  absl::StatusOr<CheckpointInfo> info = checkpoints_.FinishSave(save);
  progress_.phase = was;
  return info;
}

RankState Trainer::HostState() {
  RankState state{params_.data(), {}};
  for (std::vector<float>& s : optimizer_->states()) state.states.push_back(s.data());
  return state;
}

absl::Status Trainer::LoadStep(const fs::path& step_dir) {
  absl::StatusOr<TrainingPosition> at = checkpoints_.LoadOwned(step_dir, *train_data_, HostState());
  if (absl::Status s = AgreeOnStatus(comm_, at.status()); !s.ok()) return s;
  step_ = at->step;
  next_sequence_ = at->next_sequence;
  // Each rank read only what it owns; the rest comes from the other ranks.
  CheckCollective(GatherFlat(params_.data()), "parameter all-gather");
  if (spec_.train.zero_stage == 0) {  // every rank keeps all optimizer states
    for (std::vector<float>& state : optimizer_->states()) {
      CheckCollective(GatherFlat(state.data()), "optimizer state all-gather");
    }
  }
  if (gpu_) PushToGpu();
  return absl::OkStatus();
}

void Trainer::PullFromGpu() {
  std::vector<std::vector<float>>& s = optimizer_->states();  // AdamW's m and v
  CheckCollective(gpu_->GetState(params_.data(), s[0].data(), s[1].data()),
                  "copy of the training state from the GPU");
}

void Trainer::PushToGpu() {
  std::vector<std::vector<float>>& s = optimizer_->states();  // AdamW's m and v
  CheckCollective(gpu_->SetState(params_.data(), s[0].data(), s[1].data()),
                  "copy of the training state to the GPU");
}

void Trainer::PoisonParametersForTesting() {
  if (gpu_) PullFromGpu();
  params_[static_cast<size_t>(arch_->PoisonOffset())] = std::numeric_limits<float>::quiet_NaN();
  if (gpu_) PushToGpu();
}

void Trainer::Reinitialize() {
  arch_->Init(params_, spec_.train.seed);
  for (std::vector<float>& state : optimizer_->states())
    std::fill(state.begin(), state.end(), 0.0f);
  step_ = 0;
  next_sequence_ = 0;
  if (gpu_) PushToGpu();
}

absl::Status Trainer::Resume(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / ckpt::kManifestFileName, ec)) {
    absl::Status s = LoadStep(dir);
    if (!s.ok()) Reinitialize();
    return s;
  }
  // A checkpoint root: the newest committed step that loads, falling back to older ones.
  absl::StatusOr<std::vector<int64_t>> list = checkpoints_.CommittedSteps(dir);
  if (!list.ok()) return list.status();
  if (list->empty()) {
    return absl::NotFoundError(
        Cat(dir.string(), ": no committed checkpoint of campaign ", spec_.campaign.name));
  }
  absl::Status last_error;
  for (auto it = list->rbegin(); it != list->rend(); ++it) {
    fs::path step_dir = ckpt::StepDir(dir, spec_.campaign.name, *it);
    last_error = LoadStep(step_dir);
    if (last_error.ok()) return last_error;
    if (comm_.rank() == 0) {
      spdlog::warn("skipping checkpoint {}: {}", step_dir.string(),
                   std::string(last_error.message()));
    }
    // A failed load may have overwritten part of the state: start that part over.
    Reinitialize();
  }
  return last_error;
}

}  // namespace belay::train

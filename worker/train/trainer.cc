// One rank's training loop: data parallelism with ZeRO stages 0, 1 and 2.
#include "worker/train/trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>

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

// Adds the time its scope lasts to `total`: how long this rank waits in a blocking collective
// (the rest of a step is its own work, where a slow rank shows).
class WaitClock {
 public:
  explicit WaitClock(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~WaitClock() {
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  WaitClock(const WaitClock&) = delete;
  WaitClock& operator=(const WaitClock&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};

// Waits for collective `h`: the time goes to `wait_s`, and heartbeats say the rank is in a
// collective meanwhile (waiting for the other ranks). Aborts the rank if it failed.
void AwaitCollective(comm::CommHandle& h, std::string_view what, std::atomic<Phase>& phase,
                     double& wait_s) {
  const Phase was = phase.exchange(Phase::kCollective);
  {
    WaitClock clock(wait_s);
    CheckCollective(h.Wait(), what);
  }
  phase.store(was);
}

}  // namespace

// ZeRO stage 2's gradient path: Backward writes each bucket into staging memory, and as soon
// as a bucket is complete its reduce-scatter starts (in place: this rank's slice of the
// staging buffer receives the sum) while backward goes on with the next bucket; once it is
// done the slice is added into this rank's gradient shard. Staging is one buffer for the
// embeddings (their gradient collects from the first to the last kernel of the pass) and a
// ring of two for the other buckets; a ring buffer is reused once its earlier reduce-scatter
// has completed. So what stays resident between steps is the shard; during backward, the
// embeddings' bucket and two others.
class Trainer::ZeroTwoSink final : public model::GradientSink {
 public:
  ZeroTwoSink(const ShardPlan& plan, comm::Communicator& comm, std::vector<float>& shard,
              std::atomic<Phase>& phase, double& wait_s)
      : plan_(plan), comm_(comm), shard_(shard), phase_(phase), wait_s_(wait_s) {
    int64_t ring = 0;
    for (size_t b = 0; b + 1 < plan.buckets().size(); ++b)
      ring = std::max(ring, plan.buckets()[b].padded);
    embed_.buffer.resize(static_cast<size_t>(plan.buckets().back().padded));
    for (Slot& s : ring_) s.buffer.resize(static_cast<size_t>(ring));
  }

  // Before the backward pass of micro-batch `micro` (0-based) of a step.
  void BeginMicroBatch(int64_t micro) { micro_ = micro; }

  model::ParameterLayout::Views<float> Acquire(int group) override {
    Slot& slot = SlotOf(group);
    Complete(slot);
    const Bucket& b = plan_.buckets()[static_cast<size_t>(group)];
    std::fill(slot.buffer.begin(), slot.buffer.begin() + b.padded, 0.0f);
    return model::BindSegments(b.segments, slot.buffer.data());
  }

  void Release(int group) override {
    Slot& slot = SlotOf(group);
    const Bucket& b = plan_.buckets()[static_cast<size_t>(group)];
    std::span<float> input(slot.buffer.data(), static_cast<size_t>(b.padded));
    slot.bucket = &b;
    slot.accumulate = micro_ > 0;
    slot.handle = comm_.StartReduceScatterSum(
        input,
        input.subspan(static_cast<size_t>(comm_.rank() * b.slice), static_cast<size_t>(b.slice)));
  }

  // Completes every reduce-scatter started so far. Call after each backward pass.
  void Finish() {
    for (Slot& s : ring_) Complete(s);
    Complete(embed_);
  }

  int64_t bytes() const {
    int64_t n = static_cast<int64_t>(embed_.buffer.size());
    for (const Slot& s : ring_) n += static_cast<int64_t>(s.buffer.size());
    return n * static_cast<int64_t>(sizeof(float));
  }

 private:
  struct Slot {
    std::vector<float> buffer;  // the bucket's gradient, padded
    comm::CommHandle handle;
    const Bucket* bucket = nullptr;  // the bucket in flight, if any
    bool accumulate = false;         // add into the shard (not the first micro-batch)
  };

  Slot& SlotOf(int group) {
    if (static_cast<size_t>(group) + 1 == plan_.buckets().size()) return embed_;
    return ring_[static_cast<size_t>(group) % ring_.size()];
  }

  void Complete(Slot& slot) {
    if (slot.bucket == nullptr) return;
    AwaitCollective(slot.handle, "gradient reduce-scatter", phase_, wait_s_);
    const Bucket& b = *slot.bucket;
    const float* sum = slot.buffer.data() + comm_.rank() * b.slice;
    float* own = shard_.data() + b.shard_offset;
    if (slot.accumulate) {
      for (int64_t i = 0; i < b.slice; ++i) own[i] += sum[i];
    } else {
      std::copy(sum, sum + b.slice, own);
    }
    slot.bucket = nullptr;
  }

  const ShardPlan& plan_;
  comm::Communicator& comm_;
  std::vector<float>& shard_;
  std::atomic<Phase>& phase_;
  double& wait_s_;
  int64_t micro_ = 0;
  Slot embed_;
  std::array<Slot, 2> ring_;
};

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const CampaignSpec& spec,
                                                         comm::Communicator& comm, Device device) {
  const int W = comm.world_size();
  absl::Status local;
  if (spec.grad_accum_steps(W) == 0) {
    local = absl::InvalidArgumentError(
        Cat("train.global_batch = ", spec.train.global_batch, " does not divide into micro_batch ",
            spec.train.micro_batch, " × ", W, " ranks = ", spec.train.micro_batch * W,
            " sequences per micro-step; choose a global batch that is a multiple of it"));
  } else if (spec.train.zero_stage < 0 || spec.train.zero_stage > 2) {
    local = absl::InvalidArgumentError(
        Cat("train.zero_stage = ", spec.train.zero_stage, ": this trainer has stages 0, 1 and 2"));
  } else if (device == Device::kCuda && !comm.takes_device_memory()) {
    local = absl::InvalidArgumentError(
        "GPU training needs a communicator whose collectives take device memory (NCCL), even for "
        "one rank");
  }
  std::unique_ptr<data::DataLoader> train, val;
  if (local.ok()) {
    data::DataLoaderOptions opts;
    opts.globs = spec.data.train;
    opts.seq_len = spec.model.seq_len;
    opts.vocab_size = spec.model.vocab_size;
    opts.seed = spec.train.seed;
    opts.shuffle = spec.data.shuffle;
    opts.format = spec.data.format == DataFormat::kMegatron ? data::ShardFormat::kMegatron
                                                            : data::ShardFormat::kLlmc;
    absl::StatusOr<std::unique_ptr<data::DataLoader>> t = data::DataLoader::Open(opts);
    if (t.ok()) {
      train = std::move(*t);
    } else {
      local = t.status();
    }
    if (local.ok() && !spec.data.val.empty()) {
      opts.globs = spec.data.val;
      opts.shuffle = false;  // evaluation always reads the same sequences
      absl::StatusOr<std::unique_ptr<data::DataLoader>> v = data::DataLoader::Open(opts);
      if (v.ok()) {
        val = std::move(*v);
      } else {
        local = v.status();
      }
    }
  }
  if (absl::Status s = AgreeOnStatus(comm, local); !s.ok()) return s;

  // All ranks must train on the same data: compare what each one opened.
  std::vector<int64_t> prints(static_cast<size_t>(W));
  const int64_t mine = static_cast<int64_t>(train->fingerprint());
  CheckCollective(comm.AllGatherInt64(std::span(&mine, 1), prints), "all-gather");
  for (int r = 0; r < W; ++r) {
    if (prints[static_cast<size_t>(r)] != prints[0]) {
      return absl::FailedPreconditionError(Cat(
          "rank ", r, " opened different training data than rank 0 (fingerprint ",
          FormatXxh3(static_cast<uint64_t>(prints[static_cast<size_t>(r)])), " vs ",
          FormatXxh3(static_cast<uint64_t>(prints[0])), "); every rank must see the same shards"));
    }
  }
  std::unique_ptr<Trainer> trainer(
      new Trainer(spec, comm, device, std::move(train), std::move(val)));
  if (device == Device::kCuda) {
    // The model on this rank's GPU, with the freshly initialised parameters; at stages 1 and
    // 2 it keeps the optimizer state of this rank's pieces only, at stage 2 no whole gradient
    // either (a buffer per bucket: buckets are the model's gradient groups, in order).
    model::ShardedOptimizer shard;
    if (spec.train.zero_stage > 0) {
      shard.shard_size = trainer->plan_.shard_size();
      for (const optim::UpdatePiece& p : trainer->optimizer_->pieces()) {
        shard.pieces.push_back({p.param_offset, p.state_offset, p.size, p.decay});
      }
      for (const Bucket& b : trainer->plan_.buckets()) {
        if (spec.train.zero_stage == 1) {
          shard.staging = std::max(shard.staging, b.padded);
        } else {
          shard.group_padded.push_back(b.padded);
        }
      }
    }
    absl::StatusOr<std::unique_ptr<model::GpuModel>> gpu = model::CreateGpuModel(
        trainer->layout_, static_cast<int>(spec.train.micro_batch),
        static_cast<int>(spec.model.seq_len), spec.train.zero_stage > 0 ? &shard : nullptr);
    absl::Status made = gpu.status();
    if (gpu.ok()) {
      trainer->gpu_ = std::move(*gpu);
      made = trainer->gpu_->SetState(trainer->params_.data(), nullptr, nullptr);
    }
    if (absl::Status s = AgreeOnStatus(comm, made); !s.ok()) return s;
  }
  return trainer;
}

Trainer::Trainer(const CampaignSpec& spec, comm::Communicator& comm, Device device,
                 std::unique_ptr<data::DataLoader> train, std::unique_ptr<data::DataLoader> val)
    : spec_(spec),
      comm_(comm),
      layout_(model::Gpt2Config::FromSpec(spec.model)),
      plan_(layout_, comm.world_size()),
      owned_(plan_.Owned(comm.rank())),
      train_data_(std::move(train)),
      val_data_(std::move(val)),
      model_(device == Device::kCpu
                 ? std::make_unique<model::Gpt2>(layout_, static_cast<int>(spec.train.micro_batch),
                                                 static_cast<int>(spec.model.seq_len))
                 : nullptr),
      params_(static_cast<size_t>(layout_.total())),
      checkpoints_(spec_, comm, layout_, plan_) {
  model::InitGpt2(layout_, params_, spec.train.seed);
  accum_ = spec.grad_accum_steps(comm.world_size());
  const int stage = spec.train.zero_stage;
  if (stage == 0) {
    optimizer_ = std::make_unique<optim::AdamW>(layout_, spec.train);
  } else {
    std::vector<optim::UpdatePiece> pieces;
    for (const OwnedPiece& p : owned_) {
      pieces.push_back({p.flat_offset, p.shard_offset, p.size,
                        layout_.tensors()[static_cast<size_t>(p.tensor)].decay});
    }
    optimizer_ = std::make_unique<optim::AdamW>(std::move(pieces), plan_.shard_size(), spec.train);
    if (device == Device::kCpu) grad_shard_.resize(static_cast<size_t>(plan_.shard_size()));
  }
  if (stage < 2 && device == Device::kCpu) grads_.resize(static_cast<size_t>(layout_.total()));
  if (stage == 2 && device == Device::kCpu)
    zero2_ = std::make_unique<ZeroTwoSink>(plan_, comm_, grad_shard_, phase_, wait_s_);
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
  if (gpu_) {
    // On the device: the bf16 parameters and the fp32 master weights; the moments; the
    // gradients: whole (stage 1: also the summed shard and two staging slots of the largest
    // bucket), or (stage 2) the summed shard, the embeddings' bucket buffer and two buffers
    // of the largest other bucket. Stages 1 and 2 shard the fp32 state.
    const int64_t P = layout_.total(), f = static_cast<int64_t>(sizeof(float));
    const int stage = spec_.train.zero_stage;
    const int64_t state = stage > 0 ? plan_.shard_size() : P;
    m.params = 2 * P + f * state;
    if (stage == 2) {
      int64_t ring = 0;
      for (size_t b = 0; b + 1 < plan_.buckets().size(); ++b)
        ring = std::max(ring, plan_.buckets()[b].padded);
      m.gradients = f * (state + plan_.buckets().back().padded + 2 * ((ring + 63) / 64 * 64));
    } else {
      m.gradients =
          f * P + (stage == 1 ? f * (state + 2 * static_cast<int64_t>(staging_.size())) : 0);
    }
    m.optimizer = 2 * f * state;
    return m;
  }
  m.params = static_cast<int64_t>(params_.size() * sizeof(float));
  m.gradients = static_cast<int64_t>((grads_.size() + grad_shard_.size()) * sizeof(float));
  if (zero2_) m.gradients += zero2_->bytes();
  m.optimizer = optimizer_->state_bytes();
  return m;
}

const float* Trainer::OwnedGradients() const {
  return spec_.train.zero_stage == 0 ? grads_.data() : grad_shard_.data();
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

absl::Status Trainer::ReduceGradients() {
  if (spec_.train.zero_stage == 0) return comm_.AllReduceSum(grads_);
  // Stage 1: the whole gradient was accumulated locally; each rank keeps the sum of its slices.
  for (size_t b = 0; b < plan_.buckets().size(); ++b) {
    const Bucket& bucket = plan_.buckets()[b];
    plan_.Pack(b, grads_.data(), staging_.data());
    absl::Status s = comm_.ReduceScatterSum(
        std::span<const float>(staging_.data(), static_cast<size_t>(bucket.padded)),
        std::span<float>(grad_shard_.data() + bucket.shard_offset,
                         static_cast<size_t>(bucket.slice)));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

StepMetrics Trainer::TrainStep() {
  auto t0 = std::chrono::steady_clock::now();
  wait_s_ = 0;
  const int64_t sent_before = comm_.bytes_sent().total_bytes();
  const int T = static_cast<int>(spec_.model.seq_len);
  const int M = static_cast<int>(spec_.train.micro_batch);
  const int W = comm_.world_size(), r = comm_.rank();
  const int stage = spec_.train.zero_stage;
  // Load this rank's sequences and masks for the whole step first: the loss is normalised by
  // the counted positions of the whole global batch, which all ranks must know before any
  // backward pass. Sequence numbers are global (data::MicroBatchStart), so the global batch
  // is the same whatever the number of ranks.
  phase_ = Phase::kData;
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
      totals[0] += std::count(mask, mask + T, uint8_t{1});
    }
  }
  {
    WaitClock clock(wait_s_);
    CheckCollective(comm_.AllReduceSumInt64(totals), "all-reduce of batch counts");
  }
  const int64_t counted = totals[0];
  // The loss is the mean over the batch's counted positions, so every micro-batch's summed
  // loss is scaled by the same 1/counted.
  const float scale = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;

  // Forward and backward, micro-batch by micro-batch.
  const size_t per_micro = static_cast<size_t>(M) * static_cast<size_t>(T);
  std::vector<double> micro_loss(static_cast<size_t>(accum_));
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  model::FlatGradientSink flat(layout_, grads_.data());
  if (gpu_) CheckCollective(gpu_->ZeroGradients(), "GPU gradient reset");
  // Stage 1 on GPUs: during the last micro-batch's backward, each bucket is reduce-scattered
  // as soon as its gradient is complete, on the communicator's stream, while backward goes
  // on with the next layers (two staging slots: a slot is packed again once its earlier
  // reduce-scatter is done).
  // GPU reduce-scatters read what the model's stream wrote: the communicator's stream waits
  // for a mark of the model's stream (OrderAfter), so the host never drains the model's
  // queue before a collective. Before waiting for a collective, the host waits for the mark
  // it started after: that time is the rank's own compute, not the collective's.
  auto order_after_model = [&](int slot) -> absl::Status {
    absl::StatusOr<CUevent_st*> mark = gpu_->Mark(slot);
    if (!mark.ok()) return mark.status();
    return comm_.OrderAfter(*mark);
  };
  std::array<comm::CommHandle, 2> in_flight;
  auto reduce_bucket = [&](int group) -> absl::Status {
    const Bucket& b = plan_.buckets()[static_cast<size_t>(group)];
    const int slot = group % 2;
    if (absl::Status s = gpu_->AwaitMark(slot); !s.ok()) return s;
    AwaitCollective(in_flight[static_cast<size_t>(slot)], "gradient reduce-scatter", phase_,
                    wait_s_);
    if (absl::Status s = gpu_->PackGradients(b.segments, b.padded, slot); !s.ok()) return s;
    // The bucket's gradients and its packing done before NCCL reads them.
    if (absl::Status s = order_after_model(slot); !s.ok()) return s;
    in_flight[static_cast<size_t>(slot)] = comm_.StartReduceScatterSum(
        gpu_->DeviceStaging(slot).first(static_cast<size_t>(b.padded)),
        gpu_->DeviceGradientShard().subspan(static_cast<size_t>(b.shard_offset),
                                            static_cast<size_t>(b.slice)));
    return absl::OkStatus();
  };
  model::BackwardHooks stage1;
  stage1.release = reduce_bucket;
  // Stage 2 on GPUs: every micro-batch's backward writes each bucket into a buffer of its
  // own (the model's group buffers: one for the embeddings, two taking turns for the rest);
  // once the bucket is complete its reduce-scatter starts in place (this rank's slice of the
  // buffer receives the sum) while backward goes on. The sum lands in the gradient shard
  // (copied for the first micro-batch, added after) when the buffer is needed again: two
  // buckets later, or in the next micro-batch's backward (the embeddings' reduce-scatter
  // overlaps the next forward), or after the last micro-batch.
  struct Flight {
    comm::CommHandle handle;
    int group = -1;  // the bucket in flight, if any
    bool accumulate = false;
  };
  std::array<Flight, 3> flights;  // ring buffers 0 and 1, the embeddings' buffer
  static_assert(model::GpuModel::kMarkSlots >= 3, "a mark slot for each buffer in flight");
  const int embed_group = static_cast<int>(plan_.buckets().size()) - 1;
  // A group's buffer: its flight, and the model's mark slot its collectives are ordered after.
  auto buffer_slot = [&](int group) { return group == embed_group ? 2 : group % 2; };
  auto flight_of = [&](int group) -> Flight& {
    return flights[static_cast<size_t>(buffer_slot(group))];
  };
  auto land = [&](Flight& f) -> absl::Status {
    if (f.group < 0) return absl::OkStatus();
    if (absl::Status s = gpu_->AwaitMark(buffer_slot(f.group)); !s.ok()) return s;
    AwaitCollective(f.handle, "gradient reduce-scatter", phase_, wait_s_);
    const Bucket& b = plan_.buckets()[static_cast<size_t>(f.group)];
    f.group = -1;
    return gpu_->AddToGradientShard(
        gpu_->DeviceGroupBuffer(b.group).subspan(static_cast<size_t>(r * b.slice),
                                                 static_cast<size_t>(b.slice)),
        b.shard_offset, f.accumulate);
  };
  int64_t micro = 0;
  model::BackwardHooks stage2;
  stage2.acquire = [&](int group) { return land(flight_of(group)); };
  stage2.release = [&](int group) -> absl::Status {
    const Bucket& b = plan_.buckets()[static_cast<size_t>(group)];
    std::span<float> buffer = gpu_->DeviceGroupBuffer(group).first(static_cast<size_t>(b.padded));
    Flight& f = flight_of(group);
    // The bucket's gradients complete before NCCL reads them.
    if (absl::Status s = order_after_model(buffer_slot(group)); !s.ok()) return s;
    f.handle = comm_.StartReduceScatterSum(
        buffer, buffer.subspan(static_cast<size_t>(r * b.slice), static_cast<size_t>(b.slice)));
    f.group = group;
    f.accumulate = micro > 0;
    return absl::OkStatus();
  };
  for (int64_t a = 0; gpu_ && a < accum_; ++a) {
    const size_t off = static_cast<size_t>(a) * per_micro;
    phase_ = Phase::kForward;
    absl::StatusOr<double> l =
        gpu_->Forward(inputs_.data() + off, targets_.data() + off, masks_.data() + off, scale);
    CheckCollective(l.status(), "GPU forward");
    micro_loss[static_cast<size_t>(a)] = *l;
    phase_ = Phase::kBackward;
    micro = a;
    // (A batch with no counted position has scale 0: Forward only evaluated, the gradient is 0;
    // at stage 2 the shard ZeroGradients cleared.)
    if (scale > 0 && stage == 2) {
      CheckCollective(gpu_->Backward(stage2), "GPU backward");
    } else if (scale > 0 && stage == 1 && a + 1 == accum_) {
      CheckCollective(gpu_->Backward(stage1), "GPU backward");
    } else if (scale > 0) {
      CheckCollective(gpu_->Backward(), "GPU backward");
    }
  }
  // (Stage 1 without any backward: the zero gradient still goes through the reduce-scatters.)
  for (size_t b = 0; gpu_ && stage == 1 && scale == 0 && b < plan_.buckets().size(); ++b) {
    CheckCollective(reduce_bucket(static_cast<int>(b)), "gradient reduce-scatter");
  }
  // The gradients must be complete before the collective reads them (outside the wait clock:
  // this is the rank's own compute).
  if (gpu_) CheckCollective(gpu_->Synchronize(), "GPU backward");
  for (int64_t a = 0; !gpu_ && a < accum_; ++a) {
    const size_t off = static_cast<size_t>(a) * per_micro;
    phase_ = Phase::kForward;
    micro_loss[static_cast<size_t>(a)] = model_->Forward(
        params_.data(), inputs_.data() + off, targets_.data() + off, masks_.data() + off);
    phase_ = Phase::kBackward;
    if (stage == 2) {
      zero2_->BeginMicroBatch(a);
      model_->Backward(params_.data(), *zero2_, scale);
      zero2_->Finish();
    } else {
      model_->Backward(params_.data(), flat, scale);
    }
  }
  phase_ = Phase::kCollective;
  // Stage 2 on GPUs: the last micro-batch's buckets still in flight (land counts its wait).
  for (size_t i = 0; gpu_ && stage == 2 && i < flights.size(); ++i) {
    CheckCollective(land(flights[i]), "gradient reduce-scatter");
  }
  std::vector<double> all_loss(static_cast<size_t>(accum_ * W));
  {
    WaitClock clock(wait_s_);
    if (gpu_ && stage == 0) {
      // Stage 0 on GPUs: the whole gradient, summed on the device (NCCL) in rank order.
      CheckCollective(comm_.AllReduceSum(gpu_->DeviceGradients()), "gradient reduction");
    } else if (gpu_ && stage == 1) {
      // Stage 1 on GPUs: the last reduce-scatters started during backward.
      for (comm::CommHandle& h : in_flight) CheckCollective(h.Wait(), "gradient reduce-scatter");
    } else if (!gpu_ && stage < 2) {
      CheckCollective(ReduceGradients(), "gradient reduction");
    }
    // The loss: micro-batch sums added in global micro-batch order (micro-step a of rank r is
    // micro-batch a·W + r), the order one rank adds them in, so the value does not depend on W.
    CheckCollective(comm_.AllGatherBytes(std::as_bytes(std::span(micro_loss)),
                                         std::as_writable_bytes(std::span(all_loss))),
                    "all-gather of losses");
  }
  double loss_sum = 0;
  for (int64_t a = 0; a < accum_; ++a) {
    for (int q = 0; q < W; ++q) loss_sum += all_loss[static_cast<size_t>(q * accum_ + a)];
  }

  // Gradient norm over the shards: each rank sums the squares of what it owns, piece by
  // piece (the same pieces for every stage), and the ranks' sums add in rank order.
  // (On GPUs every rank holds the whole summed gradient: each takes the norm of all of it.)
  double sum_sq = 0;
  if (gpu_ && stage == 0) {
    absl::StatusOr<double> sq = gpu_->GradientSumOfSquares();
    CheckCollective(sq.status(), "GPU gradient norm");
    sum_sq = *sq;
  } else if (gpu_) {
    absl::StatusOr<double> sq = gpu_->GradientShardSumOfSquares();
    CheckCollective(sq.status(), "GPU gradient norm");
    WaitClock clock(wait_s_);
    sum_sq = SumOverRanks(comm_, *sq);
  } else {
    const float* g = OwnedGradients();
    double local_sq = 0;
    for (const OwnedPiece& p : owned_) {
      local_sq += kernels::cpu::SumOfSquares(g + StateOffset(p), p.size);
    }
    WaitClock clock(wait_s_);
    sum_sq = SumOverRanks(comm_, local_sq);
  }
  const double grad_norm = std::sqrt(sum_sq);
  const float clip = kernels::cpu::ClipFactor(grad_norm, spec_.train.grad_clip);
  if (clip < 1.0f && !gpu_) {
    std::vector<float>& buf = stage == 0 ? grads_ : grad_shard_;
    kernels::cpu::Scale(buf.data(), static_cast<int64_t>(buf.size()), clip);
  }

  const double lr = model::LearningRate(spec_.train, spec_.total_steps(), step_ + 1);
  phase_ = Phase::kOptimizer;
  if (gpu_) {
    const kernels::cpu::AdamWParams p = optimizer_->Params(lr, step_ + 1);
    const auto wd = static_cast<float>(spec_.train.weight_decay);
    CheckCollective(stage == 0 ? gpu_->Update(p, wd, clip) : gpu_->UpdateShard(p, wd, clip),
                    "GPU update");
    CheckCollective(gpu_->Synchronize(), "GPU update");
  } else {
    optimizer_->Update(params_.data(), OwnedGradients(), lr, step_ + 1);
  }
  // Stages 1 and 2 updated only this rank's shard: bring every rank's update to all.
  phase_ = Phase::kCollective;
  if (stage > 0 && gpu_) {
    // Every rank's updated master slice of each bucket, as bf16 parameters on every rank
    // (the conversion rounds as the owner's update did), through the staging slots in turn
    // (stage 1) or the bucket's own buffer (stage 2). Two all-gathers are in flight while
    // the host unpacks: a bucket's all-gather starts once the unpacking of the bucket two
    // before it (the buffer's last reader) is queued, ordered after it on the device.
    const std::vector<Bucket>& buckets = plan_.buckets();
    std::span<float> master = gpu_->DeviceMasterShard();
    auto slot_of = [&](size_t i) {  // the mark slot that guards bucket i's buffer
      return stage == 1 ? static_cast<int>(i % 2) : buffer_slot(buckets[i].group);
    };
    auto buffer_of = [&](size_t i) {
      const Bucket& b = buckets[i];
      return (stage == 1 ? gpu_->DeviceStaging(static_cast<int>(i % 2))
                         : gpu_->DeviceGroupBuffer(b.group))
          .first(static_cast<size_t>(b.padded));
    };
    auto gather = [&](size_t i) -> comm::CommHandle {
      if (absl::Status s = order_after_model(slot_of(i)); !s.ok())
        return comm::CommHandle(std::move(s));
      const Bucket& b = buckets[i];
      return comm_.StartAllGather(
          master.subspan(static_cast<size_t>(b.shard_offset), static_cast<size_t>(b.slice)),
          buffer_of(i));
    };
    std::array<comm::CommHandle, 2> gathers;
    for (size_t i = 0; i < std::min<size_t>(2, buckets.size()); ++i) gathers[i] = gather(i);
    for (size_t i = 0; i < buckets.size(); ++i) {
      CheckCollective(gpu_->AwaitMark(slot_of(i)), "GPU parameter unpacking");
      AwaitCollective(gathers[i % 2], "parameter all-gather", phase_, wait_s_);
      CheckCollective(gpu_->UnpackParameters(buckets[i].segments, buffer_of(i)),
                      "GPU parameter unpacking");
      if (i + 2 < buckets.size()) gathers[i % 2] = gather(i + 2);
    }
    CheckCollective(gpu_->Synchronize(), "GPU parameter unpacking");
  } else if (stage > 0) {
    WaitClock clock(wait_s_);
    CheckCollective(GatherFlat(params_.data()), "parameter all-gather");
  }
  phase_ = Phase::kData;

  ++step_;
  next_sequence_ += static_cast<uint64_t>(spec_.train.global_batch);
  // Every rank's bytes sent, wall time and time outside collectives, gathered: one small
  // collective for the step's bookkeeping (not counted in comm_bytes).
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t mine[3] = {comm_.bytes_sent().total_bytes() - sent_before,
                           static_cast<int64_t>(wall * 1e9),
                           static_cast<int64_t>(std::max(0.0, wall - wait_s_) * 1e9)};
  std::vector<int64_t> every(static_cast<size_t>(3 * W));
  CheckCollective(comm_.AllGatherInt64(mine, every), "all-gather of step bookkeeping");

  StepMetrics m;
  for (int q = 0; q < W; ++q) {
    m.comm_bytes += every[static_cast<size_t>(3 * q)];
    m.rank_step_time_s.push_back(static_cast<double>(every[static_cast<size_t>(3 * q + 1)]) * 1e-9);
    m.rank_compute_time_s.push_back(static_cast<double>(every[static_cast<size_t>(3 * q + 2)]) *
                                    1e-9);
  }
  m.step = step_;
  m.loss = counted > 0 ? loss_sum / static_cast<double>(counted) : 0.0;
  m.lr = lr;
  m.grad_norm = grad_norm;
  const int64_t positions = spec_.train.global_batch * T;
  m.goldfish_dropped = static_cast<double>(totals[1]) / static_cast<double>(positions);
  m.tokens = static_cast<int64_t>(next_sequence_) * T;
  m.data_digest = static_cast<uint64_t>(totals[2]);
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.tokens_per_s = m.step_time_s > 0 ? static_cast<double>(positions) / m.step_time_s : 0.0;
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
  phase_ = Phase::kEval;
  // Batch b is evaluated by rank b mod W; the per-batch sums then add in batch order.
  std::vector<double> mine(static_cast<size_t>(batches), 0.0);
  for (int64_t b = r; b < batches; b += W) {
    for (int i = 0; i < M; ++i) {
      uint64_t g = static_cast<uint64_t>(b * M + i);
      val_data_->Sequence(g % val_data_->sequences_per_epoch(), seq.data());
      std::copy(seq.begin(), seq.begin() + T, inputs.begin() + i * T);
      std::copy(seq.begin() + 1, seq.end(), targets.begin() + i * T);
    }
    if (gpu_) {
      absl::StatusOr<double> l = gpu_->Forward(inputs.data(), targets.data(), mask.data(), 0.0f);
      CheckCollective(l.status(), "GPU evaluation");
      mine[static_cast<size_t>(b)] = *l;
    } else {
      mine[static_cast<size_t>(b)] =
          model_->Forward(params_.data(), inputs.data(), targets.data(), mask.data());
    }
  }
  std::vector<double> all(static_cast<size_t>(batches * W));
  CheckCollective(
      comm_.AllGatherBytes(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all))),
      "all-gather of evaluation losses");
  double sum = 0;
  for (int64_t b = 0; b < batches; ++b) sum += all[static_cast<size_t>((b % W) * batches + b)];
  return sum / static_cast<double>(batches * M * T);
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
  const Phase was = phase_.exchange(Phase::kCheckpoint);
  if (gpu_) PullFromGpu();
  absl::StatusOr<std::unique_ptr<PendingSave>> save =
      checkpoints_.BeginSave(root, last, mode, background, {step_, next_sequence_},
                             train_data_->State(next_sequence_), HostState());
  phase_ = was;
  return save;
}

absl::StatusOr<CheckpointInfo> Trainer::FinishSave(PendingSave& save) {
  const Phase was = phase_.exchange(Phase::kCheckpoint);
  absl::StatusOr<CheckpointInfo> info = checkpoints_.FinishSave(save);
  phase_ = was;
  return info;
}

RankState Trainer::HostState() {
  return {params_.data(), optimizer_->m().data(), optimizer_->v().data()};
}

absl::Status Trainer::LoadStep(const fs::path& step_dir) {
  absl::StatusOr<TrainingPosition> at = checkpoints_.LoadOwned(step_dir, *train_data_, HostState());
  if (absl::Status s = AgreeOnStatus(comm_, at.status()); !s.ok()) return s;
  step_ = at->step;
  next_sequence_ = at->next_sequence;
  // Each rank read only what it owns; the rest comes from the other ranks.
  CheckCollective(GatherFlat(params_.data()), "parameter all-gather");
  if (spec_.train.zero_stage == 0) {  // every rank keeps all moments
    CheckCollective(GatherFlat(optimizer_->m().data()), "moment all-gather");
    CheckCollective(GatherFlat(optimizer_->v().data()), "moment all-gather");
  }
  if (gpu_) PushToGpu();
  return absl::OkStatus();
}

void Trainer::PullFromGpu() {
  CheckCollective(gpu_->GetState(params_.data(), optimizer_->m().data(), optimizer_->v().data()),
                  "copy of the training state from the GPU");
}

void Trainer::PushToGpu() {
  CheckCollective(gpu_->SetState(params_.data(), optimizer_->m().data(), optimizer_->v().data()),
                  "copy of the training state to the GPU");
}

void Trainer::PoisonParametersForTesting() {
  if (gpu_) PullFromGpu();
  params_[static_cast<size_t>(layout_.at("ln_f.bias").offset)] =
      std::numeric_limits<float>::quiet_NaN();
  if (gpu_) PushToGpu();
}

void Trainer::Reinitialize() {
  model::InitGpt2(layout_, params_, spec_.train.seed);
  std::fill(optimizer_->m().begin(), optimizer_->m().end(), 0.0f);
  std::fill(optimizer_->v().begin(), optimizer_->v().end(), 0.0f);
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

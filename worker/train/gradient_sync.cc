// ZeRO stages 0, 1 and 2: gradient reduction during or after backward, the norm over what
// each rank owns, and the parameter all-gather after a sharded update.
#include "worker/train/gradient_sync.h"

#include <algorithm>
#include <array>
#include <functional>

#include "worker/train/rank_agreement.h"

namespace belay::train {
namespace {

// What every stage shares: the plan, the communicator, the device, the clock.
class SyncBase : public GradientSync {
 public:
  SyncBase(const ShardPlan& plan, const std::vector<OwnedPiece>& owned, comm::Communicator& comm,
           GradientDevice& device, StepProgress& progress)
      : plan_(plan), owned_(owned), comm_(comm), device_(device), progress_(progress) {}

  void BeginStep() override { CheckCollective(device_.Zero(), "gradient reset"); }

 protected:
  // Each rank sums the squares of the shard it owns, piece by piece (the same pieces under
  // every stage), and the ranks' sums add in rank order.
  double ShardSquaredNorm() {
    absl::StatusOr<double> sq = device_.ShardSquares(owned_);
    CheckCollective(sq.status(), "gradient norm");
    WaitClock clock(progress_.wait_s);
    return SumOverRanks(comm_, *sq);
  }

  // Every rank's updated slice of each bucket, unpacked on every rank, through the buffer
  // `buffer_of(i)` guarded by device slot `slot_of(i)`. Two all-gathers are in flight while
  // the unpacking goes on: a bucket's all-gather starts once the unpacking of the bucket two
  // before it (the buffer's last reader) is queued, ordered after it on the device.
  void GatherParametersThrough(const std::function<std::span<float>(size_t)>& buffer_of,
                               const std::function<int(size_t)>& slot_of) {
    const std::vector<Bucket>& buckets = plan_.buckets();
    auto gather = [&](size_t i) -> comm::CommHandle {
      if (absl::Status s = device_.OrderCollectives(slot_of(i)); !s.ok())
        return comm::CommHandle(std::move(s));
      std::span<float> buffer = buffer_of(i);
      return comm_.StartAllGather(device_.ParameterSlice(buckets[i], buffer), buffer);
    };
    std::array<comm::CommHandle, 2> gathers;
    for (size_t i = 0; i < std::min<size_t>(2, buckets.size()); ++i) gathers[i] = gather(i);
    for (size_t i = 0; i < buckets.size(); ++i) {
      CheckCollective(device_.AwaitSlot(slot_of(i)), "parameter unpacking");
      progress_.Await(gathers[i % 2], "parameter all-gather");
      CheckCollective(device_.UnpackParameters(buckets[i], buffer_of(i)), "parameter unpacking");
      if (i + 2 < buckets.size()) gathers[i % 2] = gather(i + 2);
    }
    CheckCollective(device_.Drain(), "parameter unpacking");
  }

  const ShardPlan& plan_;
  const std::vector<OwnedPiece>& owned_;
  comm::Communicator& comm_;
  GradientDevice& device_;
  StepProgress& progress_;
};

// Stage 0: every rank accumulates the whole gradient, all-reduced after the last backward
// pass; every rank updates every parameter.
class ZeroStage0 final : public SyncBase {
 public:
  using SyncBase::SyncBase;

  model::BackwardHook* HookFor(int64_t, bool) override { return nullptr; }

  void Reduce() override {
    // The gradients complete before the collective reads them (outside the wait clock: this
    // is the rank's own compute).
    CheckCollective(device_.Drain(), "backward");
    WaitClock clock(progress_.wait_s);
    CheckCollective(comm_.AllReduceSum(device_.Whole()), "gradient reduction");
  }

  double SquaredNorm() override {
    absl::StatusOr<GradientDevice::Squares> sq = device_.WholeSquares(owned_);
    CheckCollective(sq.status(), "gradient norm");
    if (sq->all_ranks) return sq->sum;
    WaitClock clock(progress_.wait_s);
    return SumOverRanks(comm_, sq->sum);
  }

  std::span<float> OwnedGradients() override { return device_.Whole(); }
  void GatherParameters() override {}
};

// Stage 1: every rank accumulates the whole gradient; during the last micro-batch's
// backward pass each bucket, as soon as it is complete, is packed into a staging buffer and
// reduce-scattered into the ranks' shards while backward goes on (two staging buffers: one
// is packed again once its earlier reduce-scatter is done). Each rank updates its shard.
class ZeroStage1 final : public SyncBase, public model::BackwardHook {
 public:
  using SyncBase::SyncBase;

  void BeginStep() override {
    SyncBase::BeginStep();
    reduced_.assign(plan_.buckets().size(), false);
  }
  model::BackwardHook* HookFor(int64_t, bool last) override { return last ? this : nullptr; }

  absl::Status Acquire(int, std::span<float*>) override { return absl::OkStatus(); }
  absl::Status Release(int group) override { return ReduceBucket(static_cast<size_t>(group)); }

  void Reduce() override {
    // (No backward pass in the last micro-batch: the zero gradient still goes through the
    // reduce-scatters.)
    for (size_t b = 0; b < reduced_.size(); ++b) {
      if (!reduced_[b]) CheckCollective(ReduceBucket(b), "gradient reduce-scatter");
    }
    CheckCollective(device_.Drain(), "backward");
    WaitClock clock(progress_.wait_s);
    for (comm::CommHandle& h : in_flight_) CheckCollective(h.Wait(), "gradient reduce-scatter");
  }

  double SquaredNorm() override { return ShardSquaredNorm(); }
  std::span<float> OwnedGradients() override { return device_.Shard(); }

  void GatherParameters() override {
    GatherParametersThrough(
        [&](size_t i) {
          return device_.Staging(static_cast<int>(i % 2))
              .first(static_cast<size_t>(plan_.buckets()[i].padded));
        },
        [](size_t i) { return static_cast<int>(i % 2); });
  }

 private:
  absl::Status ReduceBucket(size_t bucket) {
    const Bucket& b = plan_.buckets()[bucket];
    const int slot = static_cast<int>(bucket % 2);
    if (absl::Status s = device_.AwaitSlot(slot); !s.ok()) return s;
    progress_.Await(in_flight_[static_cast<size_t>(slot)], "gradient reduce-scatter");
    if (absl::Status s = device_.PackGradients(b, slot); !s.ok()) return s;
    // The bucket's gradients and its packing done before the collective reads them.
    if (absl::Status s = device_.OrderCollectives(slot); !s.ok()) return s;
    in_flight_[static_cast<size_t>(slot)] = comm_.StartReduceScatterSum(
        device_.Staging(slot).first(static_cast<size_t>(b.padded)),
        device_.Shard().subspan(static_cast<size_t>(b.shard_offset), static_cast<size_t>(b.slice)));
    reduced_[bucket] = true;
    return absl::OkStatus();
  }

  std::array<comm::CommHandle, 2> in_flight_;
  std::vector<bool> reduced_;  // this step, per bucket
};

// Stage 2: no whole gradient. Every micro-batch's backward pass writes each bucket into a
// buffer of its own (one for the embeddings, whose gradient collects during the whole pass;
// two taking turns for the rest); once the bucket is complete its reduce-scatter starts in
// place (this rank's slice of the buffer receives the sum) while backward goes on. The sum
// lands in the gradient shard (copied for the first micro-batch, added after) when the
// buffer is needed again: two buckets later, or in the next micro-batch's backward (the
// embeddings' reduce-scatter overlaps the next forward), or after the last micro-batch.
class ZeroStage2 final : public SyncBase, public model::BackwardHook {
 public:
  ZeroStage2(const ShardPlan& plan, const std::vector<OwnedPiece>& owned, comm::Communicator& comm,
             GradientDevice& device, StepProgress& progress)
      : SyncBase(plan, owned, comm, device, progress),
        embed_group_(static_cast<int>(plan.buckets().size()) - 1) {}

  model::BackwardHook* HookFor(int64_t micro, bool) override {
    micro_ = micro;
    return this;
  }

  absl::Status Acquire(int group, std::span<float*> into) override {
    if (absl::Status s = Land(FlightOf(group)); !s.ok()) return s;
    device_.PrepareGroupBuffer(plan_.buckets()[static_cast<size_t>(group)], into);
    return absl::OkStatus();
  }

  absl::Status Release(int group) override {
    const Bucket& b = plan_.buckets()[static_cast<size_t>(group)];
    std::span<float> buffer = device_.GroupBuffer(group).first(static_cast<size_t>(b.padded));
    Flight& f = FlightOf(group);
    // The bucket's gradients complete before the collective reads them.
    if (absl::Status s = device_.OrderCollectives(BufferSlot(group)); !s.ok()) return s;
    f.handle = comm_.StartReduceScatterSum(
        buffer,
        buffer.subspan(static_cast<size_t>(comm_.rank() * b.slice), static_cast<size_t>(b.slice)));
    f.group = group;
    f.accumulate = micro_ > 0;
    return absl::OkStatus();
  }

  void Reduce() override {
    CheckCollective(device_.Drain(), "backward");
    // The last micro-batch's buckets still in flight (Land counts its wait).
    for (Flight& f : flights_) CheckCollective(Land(f), "gradient reduce-scatter");
  }

  double SquaredNorm() override { return ShardSquaredNorm(); }
  std::span<float> OwnedGradients() override { return device_.Shard(); }

  void GatherParameters() override {
    GatherParametersThrough(
        [&](size_t i) {
          const Bucket& b = plan_.buckets()[i];
          return device_.GroupBuffer(b.group).first(static_cast<size_t>(b.padded));
        },
        [&](size_t i) { return BufferSlot(plan_.buckets()[i].group); });
  }

 private:
  struct Flight {
    comm::CommHandle handle;
    int group = -1;  // the bucket in flight, if any
    bool accumulate = false;
  };
  static_assert(model::GpuModel::kMarkSlots >= 3, "a device slot for each buffer in flight");

  // A group's buffer: its flight, and the device slot its collectives are ordered after.
  int BufferSlot(int group) const { return group == embed_group_ ? 2 : group % 2; }
  Flight& FlightOf(int group) { return flights_[static_cast<size_t>(BufferSlot(group))]; }

  absl::Status Land(Flight& f) {
    if (f.group < 0) return absl::OkStatus();
    if (absl::Status s = device_.AwaitSlot(BufferSlot(f.group)); !s.ok()) return s;
    progress_.Await(f.handle, "gradient reduce-scatter");
    const Bucket& b = plan_.buckets()[static_cast<size_t>(f.group)];
    f.group = -1;
    return device_.AddToShard(
        device_.GroupBuffer(b.group).subspan(static_cast<size_t>(comm_.rank() * b.slice),
                                             static_cast<size_t>(b.slice)),
        b.shard_offset, f.accumulate);
  }

  const int embed_group_;
  int64_t micro_ = 0;
  std::array<Flight, 3> flights_;  // ring buffers 0 and 1, the embeddings' buffer
};

}  // namespace

std::unique_ptr<GradientSync> MakeGradientSync(int stage, const ShardPlan& plan,
                                               const std::vector<OwnedPiece>& owned,
                                               comm::Communicator& comm, GradientDevice& device,
                                               StepProgress& progress) {
  switch (stage) {
    case 0:
      return std::make_unique<ZeroStage0>(plan, owned, comm, device, progress);
    case 1:
      return std::make_unique<ZeroStage1>(plan, owned, comm, device, progress);
    default:
      return std::make_unique<ZeroStage2>(plan, owned, comm, device, progress);
  }
}

}  // namespace belay::train

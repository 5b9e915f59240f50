// The gradient memory of a CPU rank (host vectors) and of a GPU rank (the model's buffers).
#include "worker/train/gradient_device.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "kernels/grad_norm.h"

namespace belay::train {
namespace {

int64_t LargestPadded(const std::vector<Bucket>& buckets, size_t count) {
  int64_t n = 0;
  for (size_t b = 0; b < count; ++b) n = std::max(n, buckets[b].padded);
  return n;
}

class HostGradients final : public GradientDevice {
 public:
  HostGradients(const ShardPlan& plan, int rank, int stage, float* params)
      : plan_(plan), rank_(rank), params_(params) {
    const std::vector<Bucket>& buckets = plan.buckets();
    if (stage < 2) whole_.resize(static_cast<size_t>(Total()));
    if (stage > 0) shard_.resize(static_cast<size_t>(plan.shard_size()));
    if (stage == 1) {
      for (std::vector<float>& s : staging_)
        s.resize(static_cast<size_t>(LargestPadded(buckets, buckets.size())));
    }
    if (stage == 2) {
      // The embeddings' gradient collects from the first to the last kernel of the pass: a
      // buffer of its own; the other buckets take turns in two.
      embed_.resize(static_cast<size_t>(buckets.back().padded));
      for (std::vector<float>& r : ring_)
        r.resize(static_cast<size_t>(LargestPadded(buckets, buckets.size() - 1)));
    }
  }

  absl::Status Zero() override {
    std::fill(whole_.begin(), whole_.end(), 0.0f);
    return absl::OkStatus();
  }
  std::span<float> Whole() override { return whole_; }
  std::span<float> Shard() override { return shard_; }
  absl::Status Drain() override { return absl::OkStatus(); }
  absl::Status OrderCollectives(int) override { return absl::OkStatus(); }
  absl::Status AwaitSlot(int) override { return absl::OkStatus(); }

  std::span<float> Staging(int slot) override { return staging_[static_cast<size_t>(slot)]; }
  absl::Status PackGradients(const Bucket& b, int slot) override {
    plan_.Pack(static_cast<size_t>(b.group), whole_.data(), Staging(slot).data());
    return absl::OkStatus();
  }

  std::span<float> GroupBuffer(int group) override {
    if (static_cast<size_t>(group) + 1 == plan_.buckets().size()) return embed_;
    return ring_[static_cast<size_t>(group) % ring_.size()];
  }
  void PrepareGroupBuffer(const Bucket& b, std::span<float*> into) override {
    std::span<float> buffer = GroupBuffer(b.group);
    std::fill(buffer.begin(), buffer.begin() + b.padded, 0.0f);
    model::PointAtPacked(b.segments, buffer.data(), into);
  }
  absl::Status AddToShard(std::span<const float> from, int64_t shard_offset,
                          bool accumulate) override {
    float* own = shard_.data() + shard_offset;
    if (accumulate) {
      for (size_t i = 0; i < from.size(); ++i) own[i] += from[i];
    } else {
      std::copy(from.begin(), from.end(), own);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Squares> WholeSquares(const std::vector<OwnedPiece>& owned) override {
    double sum = 0;
    for (const OwnedPiece& p : owned)
      sum += kernels::cpu::SumOfSquares(whole_.data() + p.flat_offset, p.size);
    return Squares{sum, false};
  }
  absl::StatusOr<double> ShardSquares(const std::vector<OwnedPiece>& owned) override {
    double sum = 0;
    for (const OwnedPiece& p : owned)
      sum += kernels::cpu::SumOfSquares(shard_.data() + p.shard_offset, p.size);
    return sum;
  }

  std::span<const float> ParameterSlice(const Bucket& b, std::span<float> buffer) override {
    std::span<float> mine =
        buffer.subspan(static_cast<size_t>(rank_ * b.slice), static_cast<size_t>(b.slice));
    std::fill(mine.begin(), mine.end(), 0.0f);
    for (const OwnedPiece& p : plan_.OwnedInBucket(static_cast<size_t>(b.group), rank_)) {
      std::memcpy(mine.data() + (p.shard_offset - b.shard_offset), params_ + p.flat_offset,
                  static_cast<size_t>(p.size) * sizeof(float));
    }
    return mine;
  }
  absl::Status UnpackParameters(const Bucket& b, std::span<const float> buffer) override {
    plan_.Unpack(static_cast<size_t>(b.group), buffer.data(), params_);
    return absl::OkStatus();
  }

  // The stage-1 staging buffers are scratch of the reduction, not counted.
  int64_t bytes() const override {
    size_t n = whole_.size() + shard_.size() + embed_.size();
    for (const std::vector<float>& r : ring_) n += r.size();
    return static_cast<int64_t>(n * sizeof(float));
  }

 private:
  int64_t Total() const {
    int64_t n = 0;
    for (const Bucket& b : plan_.buckets()) n += b.elements;
    return n;
  }

  const ShardPlan& plan_;
  const int rank_;
  float* const params_;
  std::vector<float> whole_;
  std::vector<float> shard_;
  std::array<std::vector<float>, 2> staging_;
  std::vector<float> embed_;
  std::array<std::vector<float>, 2> ring_;
};

class GpuGradients final : public GradientDevice {
 public:
  GpuGradients(const ShardPlan& plan, int stage, model::GpuModel& gpu, comm::Communicator& comm)
      : plan_(plan), stage_(stage), gpu_(gpu), comm_(comm) {}

  absl::Status Zero() override { return gpu_.ZeroGradients(); }
  std::span<float> Whole() override { return gpu_.DeviceGradients(); }
  std::span<float> Shard() override {
    return stage_ > 0 ? gpu_.DeviceGradientShard() : std::span<float>();
  }
  absl::Status Drain() override { return gpu_.Synchronize(); }
  // Collectives read what the model's stream wrote: the communicator's stream waits for a
  // mark of the model's stream, so the host never drains the model's queue before one.
  absl::Status OrderCollectives(int slot) override {
    absl::StatusOr<CUevent_st*> mark = gpu_.Mark(slot);
    if (!mark.ok()) return mark.status();
    return comm_.OrderAfter(*mark);
  }
  absl::Status AwaitSlot(int slot) override { return gpu_.AwaitMark(slot); }

  std::span<float> Staging(int slot) override { return gpu_.DeviceStaging(slot); }
  absl::Status PackGradients(const Bucket& b, int slot) override {
    return gpu_.PackGradients(b.segments, b.padded, slot);
  }

  std::span<float> GroupBuffer(int group) override { return gpu_.DeviceGroupBuffer(group); }
  void PrepareGroupBuffer(const Bucket&, std::span<float*>) override {}
  absl::Status AddToShard(std::span<const float> from, int64_t shard_offset,
                          bool accumulate) override {
    return gpu_.AddToGradientShard(from, shard_offset, accumulate);
  }

  absl::StatusOr<Squares> WholeSquares(const std::vector<OwnedPiece>&) override {
    // Every rank holds the whole summed gradient: each takes the norm of all of it.
    absl::StatusOr<double> sq = gpu_.GradientSumOfSquares();
    if (!sq.ok()) return sq.status();
    return Squares{*sq, true};
  }
  absl::StatusOr<double> ShardSquares(const std::vector<OwnedPiece>&) override {
    return gpu_.GradientShardSumOfSquares();
  }

  std::span<const float> ParameterSlice(const Bucket& b, std::span<float>) override {
    return gpu_.DeviceMasterShard().subspan(static_cast<size_t>(b.shard_offset),
                                            static_cast<size_t>(b.slice));
  }
  absl::Status UnpackParameters(const Bucket& b, std::span<const float> buffer) override {
    return gpu_.UnpackParameters(b.segments, buffer);
  }

  // The gradients: whole (stage 1: also the summed shard and two staging slots of the
  // largest bucket), or (stage 2) the summed shard, the embeddings' bucket buffer and two
  // buffers of the largest other bucket.
  int64_t bytes() const override {
    const int64_t f = static_cast<int64_t>(sizeof(float));
    const std::vector<Bucket>& buckets = plan_.buckets();
    int64_t whole = 0;
    for (const Bucket& b : buckets) whole += b.elements;
    const int64_t state = stage_ > 0 ? plan_.shard_size() : whole;
    if (stage_ == 2) {
      const int64_t ring = LargestPadded(buckets, buckets.size() - 1);
      return f * (state + buckets.back().padded + 2 * ((ring + 63) / 64 * 64));
    }
    return f * whole + (stage_ == 1 ? f * (state + 2 * LargestPadded(buckets, buckets.size())) : 0);
  }

 private:
  const ShardPlan& plan_;
  const int stage_;
  model::GpuModel& gpu_;
  comm::Communicator& comm_;
};

}  // namespace

std::unique_ptr<GradientDevice> MakeHostGradients(const ShardPlan& plan, int rank, int stage,
                                                  float* params) {
  return std::make_unique<HostGradients>(plan, rank, stage, params);
}

std::unique_ptr<GradientDevice> MakeGpuGradients(const ShardPlan& plan, int stage,
                                                 model::GpuModel& gpu, comm::Communicator& comm) {
  return std::make_unique<GpuGradients>(plan, stage, gpu, comm);
}

}  // namespace belay::train

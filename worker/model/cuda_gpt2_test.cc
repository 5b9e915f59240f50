// GPT-2 on the GPU against the CPU model: one training step's loss and gradients, a few
// AdamW steps' losses, and bit-identical repeats.
#include "worker/model/cuda_gpt2.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/adamw.h"
#include "kernels/cuda/testing.h"
#include "worker/model/gpt2.h"
#include "worker/model/params.h"
#include "worker/optim/optimizer.h"
#include "worker/train/shard_plan.h"

namespace belay::model {
namespace {

Gpt2Config Small() {
  ModelSpec m;
  m.n_layer = 2;
  m.n_head = 4;
  m.d_model = 64;
  m.seq_len = 32;
  m.vocab_size = 200;
  return Gpt2Config::FromSpec(m);
}

// Head size 64 and T = 64: attention runs fused (flash); Small() has head size 16 and runs
// the materialising attention.
Gpt2Config SmallFlash() {
  ModelSpec m;
  m.n_layer = 2;
  m.n_head = 2;
  m.d_model = 128;
  m.seq_len = 64;
  m.vocab_size = 200;
  return Gpt2Config::FromSpec(m);
}

// A copy between device buffers that has landed when it returns. cudaMemcpy between device
// buffers may return before the copy is done, and it runs on the legacy default stream, which
// the models' non-blocking streams do not wait for: without the synchronisation the copy and
// the model's next kernel race.
bool CopyOnDevice(float* to, const float* from, int64_t n) {
  return cudaMemcpy(to, from, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice) ==
             cudaSuccess &&
         cudaDeviceSynchronize() == cudaSuccess;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  std::vector<uint8_t> mask;
};

// Tokens with some structure to learn (each target follows from its input), a few masked.
Batch MakeBatch(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  for (int i = 0; i < n; ++i) {
    const auto tok = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
    b.inputs.push_back(tok);
    b.targets.push_back((tok * 7 + 3) % vocab);
    b.mask.push_back(i % 5 == 3 ? 0 : 1);
  }
  return b;
}

// Parameters the GPU holds exactly (bf16 values), so the CPU model sees the same weights.
std::vector<float> Bf16Params(const ParameterLayout& layout, uint64_t seed) {
  std::vector<float> p(static_cast<size_t>(layout.total()));
  InitGpt2(layout, p, seed);
  return kernels::cuda::testing::RoundedToBf16(p);
}

int Counted(const Batch& b) {
  int n = 0;
  for (uint8_t m : b.mask) n += m;
  return n;
}

void CheckTrainingStep(const Gpt2Config& config, int B, int T, CudaGpt2::Attention attention) {
  const ParameterLayout layout(config);
  const Batch batch = MakeBatch(B * T, layout.config().vocab_size, 1);
  const std::vector<float> params = Bf16Params(layout, 42);
  const float scale = 1.0f / static_cast<float>(Counted(batch));

  Gpt2 cpu(layout, B, T);
  const double cpu_loss =
      cpu.Forward(params.data(), batch.inputs.data(), batch.targets.data(), batch.mask.data());
  std::vector<float> cpu_grads(params.size(), 0.0f);
  cpu.Backward(params.data(), cpu_grads.data(), scale);

  auto gpu = CudaGpt2::Create(layout, B, T, attention);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_EQ((*gpu)->fused_attention(), attention == CudaGpt2::Attention::kFused);
  ASSERT_TRUE((*gpu)->SetParameters(params.data()).ok());
  absl::StatusOr<double> gpu_loss =
      (*gpu)->Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), scale);
  ASSERT_TRUE(gpu_loss.ok()) << gpu_loss.status();
  ASSERT_TRUE((*gpu)->Backward().ok());
  std::vector<float> gpu_grads(params.size());
  ASSERT_TRUE((*gpu)->GetGradients(gpu_grads.data()).ok());

  // bf16 activations through two layers: the mean loss within 0.5%.
  EXPECT_NEAR(*gpu_loss * scale, cpu_loss * scale, 5e-3 * cpu_loss * scale);
  absl::StatusOr<std::vector<float>> losses = (*gpu)->GetLosses();
  ASSERT_TRUE(losses.ok());
  for (size_t i = 0; i < losses->size(); ++i) {
    if (batch.mask[i] == 0) {
      EXPECT_EQ((*losses)[i], 0.0f) << i;
    }
  }
  // Every tensor's gradient within a few percent as a whole (bf16 keeps 8 bits; the
  // activations are rounded at every step of the chain).
  for (const TensorView& t : layout.tensors()) {
    const double err = kernels::cuda::testing::RelativeError(
        gpu_grads.data() + t.offset, cpu_grads.data() + t.offset, static_cast<size_t>(t.size));
    std::printf("  grad %-22s relative error %.2e\n", t.name.c_str(), err);
    EXPECT_LT(err, 5e-2) << t.name;
  }
}

// A backward hook of two functions, for tests that record or check what Backward tells.
struct FunctionHook final : BackwardHook {
  std::function<absl::Status(int group)> acquire;
  std::function<absl::Status(int group)> release;
  absl::Status Acquire(int group, std::span<float*>) override {
    return acquire ? acquire(group) : absl::OkStatus();
  }
  absl::Status Release(int group) override { return release ? release(group) : absl::OkStatus(); }
};

TEST(CudaGpt2, TrainingStepMatchesCpuModel) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckTrainingStep(Small(), 4, 32, CudaGpt2::Attention::kMaterialised);
}

TEST(CudaGpt2, TrainingStepWithFusedAttentionMatchesCpuModel) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckTrainingStep(SmallFlash(), 3, 64, CudaGpt2::Attention::kFused);
}

// Trains both models `steps` AdamW steps on one batch; returns the mean losses.
std::vector<double> TrainGpu(const ParameterLayout& layout, const std::vector<float>& params,
                             const Batch& batch, int B, int T, int steps,
                             std::vector<float>* final_params,
                             CudaGpt2::Attention attention = CudaGpt2::Attention::kAuto) {
  std::vector<double> out;
  auto gpu = CudaGpt2::Create(layout, B, T, attention);
  EXPECT_TRUE(gpu.ok()) << gpu.status();
  if (!gpu.ok()) return out;
  EXPECT_TRUE((*gpu)->SetParameters(params.data()).ok());
  const float scale = 1.0f / static_cast<float>(Counted(batch));
  for (int s = 1; s <= steps; ++s) {
    EXPECT_TRUE((*gpu)->ZeroGradients().ok());
    absl::StatusOr<double> loss =
        (*gpu)->Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), scale);
    EXPECT_TRUE(loss.ok()) << loss.status();
    if (!loss.ok()) return out;
    EXPECT_TRUE((*gpu)->Backward().ok());
    kernels::cpu::AdamWParams p;
    p.lr = 1e-3f;
    p.step = s;
    EXPECT_TRUE((*gpu)->Update(p, 0.1f, 1.0f).ok());
    out.push_back(*loss * scale);
  }
  if (final_params != nullptr) {
    final_params->resize(params.size());
    EXPECT_TRUE((*gpu)->GetParameters(final_params->data()).ok());
  }
  return out;
}

TEST(CudaGpt2, AdamWStepsFollowCpuModel) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ParameterLayout layout(Small());
  const int B = 4, T = 32, steps = 8;
  const Batch batch = MakeBatch(B * T, layout.config().vocab_size, 2);
  const std::vector<float> init = Bf16Params(layout, 7);
  const std::vector<double> gpu = TrainGpu(layout, init, batch, B, T, steps, nullptr);
  ASSERT_EQ(gpu.size(), static_cast<size_t>(steps));

  std::vector<float> params = init, grads(init.size());
  Gpt2 cpu(layout, B, T);
  TrainSpec train;
  train.weight_decay = 0.1;
  optim::Optimizer adamw(optim::WholeTensors(layout.tensors()), layout.total(), train, {});
  const float scale = 1.0f / static_cast<float>(Counted(batch));
  for (int s = 1; s <= steps; ++s) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    const double loss =
        cpu.Forward(params.data(), batch.inputs.data(), batch.targets.data(), batch.mask.data());
    cpu.Backward(params.data(), grads.data(), scale);
    adamw.Update(params.data(), grads.data(), 1e-3, s);
    std::printf("  step %d loss cpu %.5f gpu %.5f\n", s, loss * scale, gpu[s - 1]);
    EXPECT_NEAR(gpu[static_cast<size_t>(s - 1)], loss * scale, 1e-2 * loss * scale) << "step " << s;
  }
  EXPECT_LT(gpu.back(), gpu.front());  // it learns
}

// The data of the sharded-optimizer cases: the Small() model's parameters, a batch to train
// on, the next batch to compare losses on, AdamW step 1.
struct ShardCase {
  explicit ShardCase(uint32_t seed)
      : batch(MakeBatch(B * T, layout.config().vocab_size, seed)),
        next(MakeBatch(B * T, layout.config().vocab_size, seed + 1)),
        init(Bf16Params(layout, seed + 7)),
        scale(1.0f / static_cast<float>(Counted(batch))) {
    p.lr = 1e-2f;
    p.step = 1;
  }
  const ParameterLayout layout{Small()};
  const int B = 2, T = 32;
  const Batch batch, next;
  const std::vector<float> init;
  const float scale;
  kernels::cpu::AdamWParams p;
};

// One training step of a model with the whole optimizer state from `init` on `batch`
// (AdamW `p`, weight decay 0.1, no clipping); its gradients in *grads when asked.
void WholeStep(const ParameterLayout& layout, int B, int T, const std::vector<float>& init,
               const Batch& batch, const kernels::cpu::AdamWParams& p,
               std::unique_ptr<CudaGpt2>* whole, std::vector<float>* grads = nullptr) {
  absl::StatusOr<std::unique_ptr<CudaGpt2>> m = CudaGpt2::Create(layout, B, T);
  ASSERT_TRUE(m.ok()) << m.status();
  *whole = std::move(*m);
  const float scale = 1.0f / static_cast<float>(Counted(batch));
  ASSERT_TRUE((*whole)->SetParameters(init.data()).ok());
  ASSERT_TRUE(
      (*whole)->Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), scale).ok());
  ASSERT_TRUE((*whole)->Backward().ok());
  if (grads != nullptr) {
    grads->resize(init.size());
    ASSERT_TRUE((*whole)->GetGradients(grads->data()).ok());
  }
  ASSERT_TRUE((*whole)->Update(p, 0.1f, 1.0f).ok());
}

// ZeRO stage 1 on two ranks, emulated in one process: each "rank" keeps the optimizer state of
// its pieces of the shard plan, its slice of every bucket's gradient is handed over as a
// reduce-scatter of one contributor would, and the master slices go to both as an all-gather
// would. Afterwards both hold exactly the parameters of a model with the whole optimizer
// state: master weights bit for bit, and the same losses on the next batch.
TEST(CudaGpt2, ShardedOptimizerOfTwoRanksUpdatesAsTheWholeOne) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ShardCase c(4);
  const auto& [layout, B, T, batch, next, init, scale, p] = c;
  const int W = 2;

  std::unique_ptr<CudaGpt2> whole;
  ASSERT_NO_FATAL_FAILURE(WholeStep(layout, B, T, init, batch, p, &whole));

  const train::ShardPlan plan(layout, W);
  std::vector<std::unique_ptr<CudaGpt2>> ranks;
  for (int r = 0; r < W; ++r) {
    ShardedOptimizer shard;
    shard.shard_size = plan.shard_size();
    for (const train::OwnedPiece& o : plan.Owned(r)) {
      shard.pieces.push_back({o.flat_offset, o.shard_offset, o.size,
                              layout.tensors()[static_cast<size_t>(o.tensor)].decay});
    }
    for (const train::Bucket& b : plan.buckets()) shard.staging = std::max(shard.staging, b.padded);
    absl::StatusOr<std::unique_ptr<CudaGpt2>> m =
        CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, &shard);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE((*m)->SetParameters(init.data()).ok());
    ASSERT_TRUE(
        (*m)->Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), scale).ok());
    ASSERT_TRUE((*m)->Backward().ok());
    for (const train::Bucket& b : plan.buckets()) {  // this rank's slice of each bucket
      ASSERT_TRUE((*m)->PackGradients(b.segments, b.padded, b.group % 2).ok());
      ASSERT_TRUE((*m)->Synchronize().ok());
      ASSERT_TRUE(CopyOnDevice((*m)->device_gradient_shard() + b.shard_offset,
                               (*m)->device_staging(b.group % 2) + r * b.slice, b.slice));
    }
    ASSERT_TRUE((*m)->UpdateShard(p, 0.1f, 1.0f).ok());
    ASSERT_TRUE((*m)->Synchronize().ok());
    ranks.push_back(std::move(*m));
  }
  for (const train::Bucket& b : plan.buckets()) {  // every rank's master slice to every rank
    for (int to = 0; to < W; ++to) {
      for (int from = 0; from < W; ++from) {
        ASSERT_TRUE(CopyOnDevice(
            ranks[static_cast<size_t>(to)]->device_staging(b.group % 2) + from * b.slice,
            ranks[static_cast<size_t>(from)]->device_master() + b.shard_offset, b.slice));
      }
      CudaGpt2& m = *ranks[static_cast<size_t>(to)];
      ASSERT_TRUE(
          m.UnpackParameters(b.segments, m.device_staging(b.group % 2), m.staging_size()).ok());
      ASSERT_TRUE(ranks[static_cast<size_t>(to)]->Synchronize().ok());
    }
  }

  std::vector<float> want(init.size()), got(init.size());
  ASSERT_TRUE(whole->GetParameters(want.data()).ok());
  std::vector<float> want_m(init.size()), want_v(init.size());
  ASSERT_TRUE(whole->GetMoments(want_m.data(), want_v.data()).ok());
  absl::StatusOr<double> want_loss =
      whole->Forward(next.inputs.data(), next.targets.data(), next.mask.data(), 0.0f);
  ASSERT_TRUE(want_loss.ok());
  for (int r = 0; r < W; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    ASSERT_TRUE(ranks[static_cast<size_t>(r)]->GetParameters(got.data()).ok());
    for (const train::OwnedPiece& o : plan.Owned(r)) {
      ASSERT_TRUE(kernels::cuda::testing::SameBytes(got.data() + o.flat_offset,
                                                    want.data() + o.flat_offset,
                                                    static_cast<size_t>(o.size) * sizeof(float)))
          << "master weights of the piece at " << o.flat_offset;
    }
    absl::StatusOr<double> loss = ranks[static_cast<size_t>(r)]->Forward(
        next.inputs.data(), next.targets.data(), next.mask.data(), 0.0f);
    ASSERT_TRUE(loss.ok());
    EXPECT_EQ(*loss, *want_loss);  // the same bf16 parameters everywhere: the same bits
    std::vector<float> m(static_cast<size_t>(plan.shard_size())), v(m.size());
    ASSERT_TRUE(ranks[static_cast<size_t>(r)]->GetMoments(m.data(), v.data()).ok());
    for (const train::OwnedPiece& o : plan.Owned(r)) {
      const auto at = static_cast<size_t>(o.shard_offset),
                 bytes = static_cast<size_t>(o.size) * sizeof(float);
      EXPECT_TRUE(
          kernels::cuda::testing::SameBytes(m.data() + at, want_m.data() + o.flat_offset, bytes))
          << "m";
      EXPECT_TRUE(
          kernels::cuda::testing::SameBytes(v.data() + at, want_v.data() + o.flat_offset, bytes))
          << "v";
    }
  }
  EXPECT_EQ(ranks[0]->Update(p, 0.1f, 1.0f).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(whole->UpdateShard(p, 0.1f, 1.0f).code(), absl::StatusCode::kFailedPrecondition);
}

// ZeRO stage 2 on one rank: the optimizer shard is everything, and there is no whole
// gradient; each gradient group lands in its group buffer.
ShardedOptimizer StageTwo(const ParameterLayout& layout, const train::ShardPlan& plan,
                          int extra_padding) {
  ShardedOptimizer shard;
  shard.shard_size = plan.shard_size();
  for (const train::OwnedPiece& o : plan.Owned(0)) {
    shard.pieces.push_back({o.flat_offset, o.shard_offset, o.size,
                            layout.tensors()[static_cast<size_t>(o.tensor)].decay});
  }
  for (const train::Bucket& b : plan.buckets())
    shard.group_padded.push_back(b.padded + extra_padding);
  return shard;
}

// Backward writes each group into its buffer in the bucket's order (segments one after
// another, zeros after), bit for bit the whole gradient's values, and tells the hooks in the
// documented order; the shard filled from the buffers updates exactly as the whole optimizer.
TEST(CudaGpt2, ShardedGradientsLandInTheGroupBuffersAndUpdateAsTheWholeOne) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ShardCase c(6);
  const auto& [layout, B, T, batch, next, init, scale, p] = c;
  const int L = layout.config().n_layer;

  std::unique_ptr<CudaGpt2> whole;
  std::vector<float> want_grads;
  ASSERT_NO_FATAL_FAILURE(WholeStep(layout, B, T, init, batch, p, &whole, &want_grads));

  const train::ShardPlan plan(layout, 1);
  const ShardedOptimizer shard = StageTwo(layout, plan, 5);
  absl::StatusOr<std::unique_ptr<CudaGpt2>> made =
      CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, &shard);
  ASSERT_TRUE(made.ok()) << made.status();
  CudaGpt2& m = **made;
  EXPECT_EQ(m.device_gradients(), nullptr);
  EXPECT_EQ(m.device_staging(0), nullptr);
  ASSERT_TRUE(m.SetParameters(init.data()).ok());
  // Poison the buffers: Backward must clear them itself.
  for (int g = 0; g < L + 2; ++g) {
    ASSERT_EQ(cudaMemset(m.device_group_buffer(g), 0x7f,
                         static_cast<size_t>(m.group_buffer_size(g)) * sizeof(float)),
              cudaSuccess);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // (the default stream is not the model's)
  ASSERT_TRUE(m.Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), scale).ok());
  std::vector<std::string> calls;
  FunctionHook hooks;
  hooks.acquire = [&](int g) {
    calls.push_back(absl::StrCat("a", g));
    return absl::OkStatus();
  };
  hooks.release = [&](int g) -> absl::Status {
    calls.push_back(absl::StrCat("r", g));
    if (absl::Status s = m.Synchronize(); !s.ok()) return s;
    const train::Bucket& b = plan.buckets()[static_cast<size_t>(g)];
    std::vector<float> got(static_cast<size_t>(m.group_buffer_size(g)));
    EXPECT_EQ(got.size(), static_cast<size_t>(b.padded + 5));
    EXPECT_EQ(cudaMemcpy(got.data(), m.device_group_buffer(g), got.size() * sizeof(float),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    size_t at = 0;
    for (const Segment& s : b.segments) {
      EXPECT_TRUE(kernels::cuda::testing::SameBytes(got.data() + at, want_grads.data() + s.offset,
                                                    static_cast<size_t>(s.size) * sizeof(float)))
          << "group " << g << ", tensor " << s.tensor;
      at += static_cast<size_t>(s.size);
    }
    for (; at < got.size(); ++at)
      EXPECT_EQ(got[at], 0.0f) << "padding of group " << g << " at " << at;
    return m.AddToGradientShard(m.device_group_buffer(g), b.slice, b.shard_offset, false);
  };
  ASSERT_TRUE(m.Backward(&hooks).ok());
  std::vector<std::string> want_calls = {absl::StrCat("a", L + 1)};
  for (int g = 0; g <= L; ++g) {
    want_calls.push_back(absl::StrCat("a", g));
    want_calls.push_back(absl::StrCat("r", g));
  }
  want_calls.push_back(absl::StrCat("r", L + 1));
  EXPECT_EQ(calls, want_calls);

  absl::StatusOr<double> whole_sq = whole->GradientSumOfSquares();
  absl::StatusOr<double> shard_sq = m.GradientShardSumOfSquares();
  ASSERT_TRUE(whole_sq.ok() && shard_sq.ok());
  // The same values (padding adds zeros), summed in bucket order instead of layout order.
  EXPECT_NEAR(*shard_sq, *whole_sq, 1e-12 * *whole_sq);
  ASSERT_TRUE(m.UpdateShard(p, 0.1f, 1.0f).ok());
  // (One rank: its update covers everything; the bf16 copy is written in place.)
  std::vector<float> want(init.size()), got(init.size());
  ASSERT_TRUE(whole->GetParameters(want.data()).ok());
  ASSERT_TRUE(m.GetParameters(got.data()).ok());
  EXPECT_TRUE(
      kernels::cuda::testing::SameBytes(got.data(), want.data(), got.size() * sizeof(float)));
  absl::StatusOr<double> want_loss =
      whole->Forward(next.inputs.data(), next.targets.data(), next.mask.data(), 0.0f);
  absl::StatusOr<double> loss =
      m.Forward(next.inputs.data(), next.targets.data(), next.mask.data(), 0.0f);
  ASSERT_TRUE(want_loss.ok() && loss.ok());
  EXPECT_EQ(*loss, *want_loss);

  // No whole gradient and no stage-1 staging at stage 2.
  std::vector<float> grads(init.size());
  EXPECT_EQ(m.GetGradients(grads.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.GradientSumOfSquares().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.PackGradients(plan.buckets()[0].segments, plan.buckets()[0].padded, 0).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.AddToGradientShard(m.device_group_buffer(0), plan.shard_size() + 1, 0, false).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.device_group_buffer(L + 2), nullptr);
  EXPECT_EQ(whole->AddToGradientShard(nullptr, 0, 0, false).code(),
            absl::StatusCode::kFailedPrecondition);
  ShardedOptimizer short_group = shard;
  short_group.group_padded[1] = 1;
  EXPECT_EQ(
      CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, &short_group).status().code(),
      absl::StatusCode::kInvalidArgument);
  short_group.group_padded.pop_back();
  EXPECT_EQ(
      CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, &short_group).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// Two micro-batches: the shard takes the first one's buffers and adds the second's; that is
// the whole model's accumulated gradient up to fp32 rounding (which adds in another place).
TEST(CudaGpt2, ShardedGradientsAccumulateOverMicroBatches) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ParameterLayout layout(Small());
  const int B = 2, T = 32;
  const Batch first = MakeBatch(B * T, layout.config().vocab_size, 8);
  const Batch second = MakeBatch(B * T, layout.config().vocab_size, 9);
  const std::vector<float> init = Bf16Params(layout, 15);
  const float scale = 1.0f / static_cast<float>(Counted(first) + Counted(second));

  absl::StatusOr<std::unique_ptr<CudaGpt2>> whole = CudaGpt2::Create(layout, B, T);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE((*whole)->SetParameters(init.data()).ok());
  const train::ShardPlan plan(layout, 1);
  const ShardedOptimizer shard = StageTwo(layout, plan, 0);
  absl::StatusOr<std::unique_ptr<CudaGpt2>> made =
      CudaGpt2::Create(layout, B, T, CudaGpt2::Attention::kAuto, &shard);
  ASSERT_TRUE(made.ok()) << made.status();
  CudaGpt2& m = **made;
  ASSERT_TRUE(m.SetParameters(init.data()).ok());
  bool accumulate = false;
  FunctionHook hooks;
  hooks.release = [&](int g) {
    const train::Bucket& b = plan.buckets()[static_cast<size_t>(g)];
    return m.AddToGradientShard(m.device_group_buffer(g), b.slice, b.shard_offset, accumulate);
  };
  for (const Batch* batch : {&first, &second}) {
    ASSERT_TRUE(
        (*whole)
            ->Forward(batch->inputs.data(), batch->targets.data(), batch->mask.data(), scale)
            .ok());
    ASSERT_TRUE((*whole)->Backward().ok());
    ASSERT_TRUE(
        m.Forward(batch->inputs.data(), batch->targets.data(), batch->mask.data(), scale).ok());
    ASSERT_TRUE(m.Backward(&hooks).ok());
    accumulate = true;
  }
  std::vector<float> want(init.size()), got(static_cast<size_t>(plan.shard_size()));
  ASSERT_TRUE((*whole)->GetGradients(want.data()).ok());
  ASSERT_TRUE(m.Synchronize().ok());
  ASSERT_EQ(cudaMemcpy(got.data(), m.device_gradient_shard(), got.size() * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  double worst = 0;
  for (const train::OwnedPiece& o : plan.Owned(0)) {
    for (int64_t i = 0; i < o.size; ++i) {
      const double ref = want[static_cast<size_t>(o.flat_offset + i)];
      const double d = std::abs(got[static_cast<size_t>(o.shard_offset + i)] - ref);
      worst = std::max(worst, d - 1e-5 * std::abs(ref));
    }
  }
  EXPECT_LE(worst, 1e-7);
}

TEST(CudaGpt2, TwoRunsAreBitIdentical) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ParameterLayout layout(Small());
  const int B = 4, T = 32;
  const Batch batch = MakeBatch(B * T, layout.config().vocab_size, 3);
  const std::vector<float> init = Bf16Params(layout, 9);
  std::vector<float> p1, p2;
  const std::vector<double> a = TrainGpu(layout, init, batch, B, T, 4, &p1);
  const std::vector<double> b = TrainGpu(layout, init, batch, B, T, 4, &p2);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a, b);  // exact, not near
  ASSERT_EQ(p1.size(), p2.size());
  EXPECT_TRUE(kernels::cuda::testing::SameBytes(p1.data(), p2.data(), p1.size() * sizeof(float)));
}

TEST(CudaGpt2, TwoRunsWithFusedAttentionAreBitIdentical) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ParameterLayout layout(SmallFlash());
  const int B = 2, T = 64;
  const Batch batch = MakeBatch(B * T, layout.config().vocab_size, 5);
  const std::vector<float> init = Bf16Params(layout, 11);
  std::vector<float> p1, p2;
  const auto fused = CudaGpt2::Attention::kFused;
  const std::vector<double> a = TrainGpu(layout, init, batch, B, T, 4, &p1, fused);
  const std::vector<double> b = TrainGpu(layout, init, batch, B, T, 4, &p2, fused);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a, b);
  EXPECT_LT(a.back(), a.front());
  ASSERT_EQ(p1.size(), p2.size());
  EXPECT_TRUE(kernels::cuda::testing::SameBytes(p1.data(), p2.data(), p1.size() * sizeof(float)));
}

TEST(CudaGpt2, RejectsTokensOutsideTheVocabulary) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const ParameterLayout layout(Small());
  auto gpu = CudaGpt2::Create(layout, 1, 8);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  Batch batch = MakeBatch(8, layout.config().vocab_size, 4);
  batch.inputs[5] = layout.config().vocab_size;
  EXPECT_EQ((*gpu)
                ->Forward(batch.inputs.data(), batch.targets.data(), batch.mask.data(), 0.0f)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*gpu)->Backward().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CudaGpt2, RejectsShapesTheKernelsCannotRun) {
  const ParameterLayout layout(Small());
  EXPECT_EQ(CudaGpt2::Create(layout, 1, 12).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaGpt2::Create(layout, 1, 64).status().code(), absl::StatusCode::kInvalidArgument);
  // Head size 16: no fused attention for it.
  EXPECT_EQ(CudaGpt2::Create(layout, 1, 32, CudaGpt2::Attention::kFused).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaGpt2, FusesAttentionWhereTheShapeAllows) {
  BELAY_REQUIRE_CUDA_DEVICE();
  auto small = CudaGpt2::Create(ParameterLayout(Small()), 1, 32);  // head size 16
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_FALSE((*small)->fused_attention());
  const ParameterLayout flash(SmallFlash());
  auto fused = CudaGpt2::Create(flash, 1, 64);
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_TRUE((*fused)->fused_attention());
  auto materialised = CudaGpt2::Create(flash, 1, 64, CudaGpt2::Attention::kMaterialised);
  ASSERT_TRUE(materialised.ok()) << materialised.status();
  EXPECT_FALSE((*materialised)->fused_attention());
}

}  // namespace
}  // namespace belay::model

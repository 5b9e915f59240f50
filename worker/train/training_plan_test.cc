// The plan of `belay plan` against what the code allocates: real Trainers (one rank, ZeRO
// stages 0, 1 and 2), the gradient buffers and optimizers of every rank of larger worlds, and
// the model classes' activation buffers; and the published Apertus 8B and 70B shapes.
#include "worker/train/training_plan.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "common/testing/tiny_campaign.h"
#include "worker/comm/single_communicator.h"
#include "worker/data/shard.h"
#include "worker/model/apertus.h"
#include "worker/model/gpt2.h"
#include "worker/optim/optimizer.h"
#include "worker/train/gradient_device.h"
#include "worker/train/shard_plan.h"
#include "worker/train/trainer.h"

namespace belay::train {
namespace {

namespace fs = std::filesystem;

struct Gpt2Shape {
  int n_layer, n_head, d_model, seq_len, vocab, micro_batch, global_batch;
};
constexpr Gpt2Shape kGpt2Shapes[] = {
    {1, 1, 8, 8, 257, 1, 1},
    {2, 2, 16, 16, 300, 2, 4},
    {3, 4, 32, 24, 1000, 3, 6},
};

CampaignSpec Gpt2Spec(const Gpt2Shape& s, int stage, const std::string& data) {
  CampaignSpec spec = testing::TinyCampaignSpec();
  spec.model.n_layer = s.n_layer;
  spec.model.n_head = s.n_head;
  spec.model.d_model = s.d_model;
  spec.model.seq_len = s.seq_len;
  spec.model.vocab_size = s.vocab;
  spec.train.micro_batch = s.micro_batch;
  spec.train.global_batch = s.global_batch;
  spec.train.zero_stage = stage;
  spec.data.train = {data};
  return spec;
}

// A training shard of byte tokens in a directory of its own.
class TrainingPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("training_plan_test." + std::to_string(getpid()));
    fs::create_directories(dir_);
    absl::StatusOr<data::TokenShardWriter> w =
        data::TokenShardWriter::Create(dir_ / "train_000.bin", 1);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<int32_t> tokens(8192);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 % 256);
    ASSERT_TRUE(w->Append(tokens).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Glob() const { return (dir_ / "train_*.bin").string(); }

  fs::path dir_;
};

TEST_F(TrainingPlanTest, CpuGpt2MatchesWhatATrainerAndItsModelAllocate) {
  for (const Gpt2Shape& shape : kGpt2Shapes) {
    for (int stage : {0, 1, 2}) {
      SCOPED_TRACE(::testing::Message() << "layers " << shape.n_layer << " stage " << stage);
      const CampaignSpec spec = Gpt2Spec(shape, stage, Glob());
      absl::StatusOr<TrainingPlan> plan = PlanTraining(spec);
      ASSERT_TRUE(plan.ok()) << plan.status();
      EXPECT_TRUE(plan->estimates.empty());
      comm::SingleCommunicator comm;
      absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(spec, comm);
      ASSERT_TRUE(trainer.ok()) << trainer.status();
      const MemoryAccounting measured = (*trainer)->memory();
      const RankBytes& planned = plan->memory();
      EXPECT_EQ(planned.weights, measured.params);
      EXPECT_EQ(planned.gradients, measured.gradients);
      EXPECT_EQ(planned.optimizer, measured.optimizer);
      EXPECT_EQ(plan->parameters, static_cast<int64_t>((*trainer)->params().size()));
      // An asynchronous save's copy of what the rank owns.
      absl::StatusOr<std::unique_ptr<PendingSave>> save =
          (*trainer)->BeginSave(dir_ / "ckpt", StepMetrics{}, SaveMode::kCommit, true);
      ASSERT_TRUE(save.ok()) << save.status();
      EXPECT_EQ(planned.save_copy, static_cast<int64_t>((*save)->state.size() * sizeof(float)));
      ASSERT_TRUE((*trainer)->FinishSave(**save).ok());

      const model::ParameterLayout layout(model::Gpt2Config::FromSpec(spec.model));
      const model::Gpt2 model(layout, shape.micro_batch, shape.seq_len);
      EXPECT_EQ(planned.activations, model.ActivationBytes());
      // Every stage's row is the plan of that stage.
      EXPECT_EQ(planned, plan->stages[static_cast<size_t>(stage)]);
    }
  }
}

// The gradient buffers and optimizer states of every rank of W ranks: the same host
// gradients and AdamW the trainer makes for that rank, built here without the other ranks.
void ExpectRanksMatch(const CampaignSpec& spec, const std::vector<std::vector<model::Segment>>& g,
                      int64_t parameters) {
  const TrainingPlan plan = *PlanTraining(spec);
  const int W = static_cast<int>(spec.resources.world_size());
  const ShardPlan shards(g, W);
  EXPECT_EQ(plan.shard_elements, shards.shard_size());
  std::vector<float> params(static_cast<size_t>(parameters));
  // The save copy is that of the rank that owns the most.
  int64_t most_owned = 0;
  for (int rank = 0; rank < W; ++rank) {
    int64_t owned = 0;
    for (const OwnedPiece& p : shards.Owned(rank)) owned += p.size;
    most_owned = std::max(most_owned, owned);
  }
  for (int stage : {0, 1, 2}) {
    EXPECT_EQ(plan.stages[static_cast<size_t>(stage)].save_copy,
              4 * (1 + plan.optimizer_states) * most_owned);
    const RankBytes& planned = plan.stages[static_cast<size_t>(stage)];
    for (int rank = 0; rank < W; ++rank) {
      SCOPED_TRACE(::testing::Message() << "W " << W << " rank " << rank << " stage " << stage);
      std::unique_ptr<GradientDevice> grads = MakeHostGradients(shards, rank, stage, params.data());
      EXPECT_EQ(planned.gradients, grads->bytes());
      std::vector<optim::UpdatePiece> pieces;
      for (const OwnedPiece& p : shards.Owned(rank))
        pieces.push_back({p.flat_offset, p.shard_offset, p.size, false});
      const optim::Optimizer optimizer(std::move(pieces),
                                       stage == 0 ? parameters : shards.shard_size(), spec.train,
                                       spec.optimizer);
      EXPECT_EQ(planned.optimizer, optimizer.state_bytes());
      EXPECT_EQ(planned.weights, 4 * parameters);
    }
  }
}

TEST(TrainingPlan, Gpt2RanksOfLargerWorldsHoldWhatTheShardPlanGivesThem) {
  for (const Gpt2Shape& shape : kGpt2Shapes) {
    for (int world : {2, 3, 4}) {
      CampaignSpec spec = Gpt2Spec(shape, 0, "/data/train_*.bin");
      spec.resources.ranks_per_node = world;
      spec.train.micro_batch = 1;
      spec.train.global_batch = world;
      const model::ParameterLayout layout(model::Gpt2Config::FromSpec(spec.model));
      ExpectRanksMatch(spec, model::GradientGroups(layout), layout.total());
    }
  }
}

model::ApertusConfig SmallApertus() {
  model::ApertusConfig c;
  c.vocab_size = 300;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_ff = 48;
  return c;
}

CampaignSpec ApertusSpec(const model::ApertusConfig& c, int64_t seq, int64_t micro) {
  CampaignSpec spec = testing::TinyCampaignSpec();
  spec.model.arch = ModelArch::kApertus;
  spec.model.vocab_size = c.vocab_size;
  spec.model.n_layer = c.n_layer;
  spec.model.d_model = c.d_model;
  spec.model.n_head = c.n_head;
  spec.model.n_kv_head = c.n_kv_head;
  spec.model.d_ff = c.d_ff;
  spec.model.qk_norm = c.qk_norm;
  spec.model.tie_embeddings = c.tie_embeddings;
  spec.model.activation = c.activation == model::MlpActivation::kSwiglu ? MlpActivation::kSwiglu
                          : c.activation == model::MlpActivation::kGelu ? MlpActivation::kGelu
                                                                        : MlpActivation::kXielu;
  spec.model.rope_theta = c.rope.theta;
  if (c.rope.factor != 1.0) {
    spec.model.rope_scaling =
        RopeScalingSpec{.factor = c.rope.factor,
                        .low_freq_factor = c.rope.low_freq_factor,
                        .high_freq_factor = c.rope.high_freq_factor,
                        .original_context = static_cast<int64_t>(c.rope.original_context)};
  }
  spec.model.seq_len = seq;
  spec.train.micro_batch = micro;
  spec.train.global_batch = micro;
  return spec;
}

std::vector<model::ApertusConfig> ApertusVariants() {
  std::vector<model::ApertusConfig> out;
  model::ApertusConfig c = SmallApertus();
  out.push_back(c);
  c.activation = model::MlpActivation::kSwiglu;
  c.tie_embeddings = true;
  out.push_back(c);
  c = SmallApertus();
  c.activation = model::MlpActivation::kGelu;
  c.qk_norm = false;
  c.n_kv_head = 4;
  c.n_layer = 3;
  out.push_back(c);
  return out;
}

TEST(TrainingPlan, CpuApertusMatchesWhatTheModelAndTheShardPlanAllocate) {
  for (const model::ApertusConfig& c : ApertusVariants()) {
    for (auto [seq, micro] : {std::pair{8, 1}, std::pair{16, 3}}) {
      SCOPED_TRACE(::testing::Message() << "layers " << c.n_layer << " seq " << seq);
      CampaignSpec spec = ApertusSpec(c, seq, micro);
      absl::StatusOr<TrainingPlan> plan = PlanTraining(spec);
      ASSERT_TRUE(plan.ok()) << plan.status();
      const model::ApertusLayout layout(*ApertusConfigFromSpec(spec.model, spec.data));
      EXPECT_EQ(layout.config(), c);
      EXPECT_EQ(plan->parameters, layout.total());
      EXPECT_EQ(plan->non_embedding, layout.NonEmbeddingParameters());
      EXPECT_EQ(plan->flops_per_token, model::ApertusFlopsPerToken(layout, seq));
      const model::ApertusModel model(layout, micro, seq);
      for (const RankBytes& stage : plan->stages)
        EXPECT_EQ(stage.activations, model.ActivationBytes());
      for (int world : {1, 2, 3}) {
        spec.resources.ranks_per_node = world;
        spec.train.global_batch = micro * world;
        ExpectRanksMatch(spec, model::ApertusGradientGroups(layout), layout.total());
      }
    }
  }
}

TEST(TrainingPlan, AdemamixKeepsThreeStatesWhereAdamwKeepsTwo) {
  CampaignSpec spec = Gpt2Spec(kGpt2Shapes[1], 0, "/data/train_*.bin");
  spec.resources.ranks_per_node = 2;
  const TrainingPlan adamw = *PlanTraining(spec);
  spec.optimizer.name = OptimizerKind::kAdemamix;
  const TrainingPlan ademamix = *PlanTraining(spec);
  EXPECT_EQ(ademamix.optimizer_states, 3);
  // Measured, not estimated: every rank's optimizer is the trainer's AdEMAMix.
  EXPECT_TRUE(ademamix.estimates.empty());
  const model::ParameterLayout layout(model::Gpt2Config::FromSpec(spec.model));
  ExpectRanksMatch(spec, model::GradientGroups(layout), layout.total());
  const int64_t P = adamw.parameters, S = adamw.shard_elements;
  for (size_t stage = 0; stage < 3; ++stage) {
    const int64_t elements = stage == 0 ? P : S;
    EXPECT_EQ(adamw.stages[stage].optimizer, 2 * 4 * elements);
    EXPECT_EQ(ademamix.stages[stage].optimizer, 3 * 4 * elements);
    // The asynchronous save copies the parameters and every state of what the rank owns.
    EXPECT_EQ(ademamix.stages[stage].save_copy * 3, adamw.stages[stage].save_copy * 4);
    EXPECT_EQ(ademamix.stages[stage].gradients, adamw.stages[stage].gradients);
  }
}

TEST(TrainingPlan, ShardedStagesNeedLessPerRankAndPaddingCounts) {
  CampaignSpec spec = Gpt2Spec(kGpt2Shapes[2], 0, "/data/train_*.bin");
  spec.resources.ranks_per_node = 3;
  spec.train.micro_batch = 1;
  spec.train.global_batch = 3;
  const TrainingPlan plan = *PlanTraining(spec);
  EXPECT_GT(plan.stages[0].optimizer, plan.stages[1].optimizer);
  EXPECT_EQ(plan.stages[1].optimizer, plan.stages[2].optimizer);
  EXPECT_GT(plan.stages[1].gradients, plan.stages[2].gradients);
  // The shard is at least a third of the parameters, padding included.
  EXPECT_GE(3 * plan.shard_elements, plan.parameters);
  EXPECT_EQ(plan.tokens_per_step, 3 * 24);
  EXPECT_EQ(plan.grad_accum_steps, 1);
}

TEST(TrainingPlan, Gpt2FlopsAreTheMfuCountOfTheBenchmarks) {
  // GPT-2 124M at T 1024: 6·124,475,904 + 6·12·768·1024.
  CampaignSpec spec = testing::TinyCampaignSpec();
  spec.model.n_layer = 12;
  spec.model.n_head = 12;
  spec.model.d_model = 768;
  spec.model.seq_len = 1024;
  spec.model.vocab_size = 50257;
  const TrainingPlan plan = *PlanTraining(spec);
  EXPECT_EQ(plan.parameters, 124475904);
  EXPECT_EQ(plan.non_embedding, 124475904 - 50304 * 768 - 1024 * 768);
  EXPECT_EQ(plan.flops_per_token, 6.0 * 124475904 + 6.0 * 12 * 768 * 1024);
}

TEST(TrainingPlan, RefusesABatchThatDoesNotDivideOverTheRanks) {
  CampaignSpec spec = testing::TinyCampaignSpec();
  spec.resources.ranks_per_node = 2;
  spec.train.global_batch = 3;
  EXPECT_EQ(PlanTraining(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = ApertusSpec(SmallApertus(), 8, 1);
  spec.model.n_kv_head = 3;
  EXPECT_EQ(PlanTraining(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

// The published shapes (docs/APERTUS shapes; tech report Table 1), trained as on Alps:
// GH200 GPUs, four per node, micro-batch 1 at seq 4096, 2048 sequences (8.4M tokens) per
// step, AdEMAMix, ZeRO stage 1; data parallelism only, as belay trains.
CampaignSpec PublishedApertus(int layers, int d_model, int heads, int d_ff, int64_t gpus) {
  model::ApertusConfig c;
  c.vocab_size = 131072;
  c.n_layer = layers;
  c.d_model = d_model;
  c.n_head = heads;
  c.n_kv_head = 8;
  c.d_ff = d_ff;
  CampaignSpec spec = ApertusSpec(c, 4096, 1);
  spec.optimizer.name = OptimizerKind::kAdemamix;
  spec.resources.nodes = gpus / 4;
  spec.resources.ranks_per_node = 4;
  spec.resources.gpus_per_node = 4;
  spec.train.dtype = DType::kBf16;
  spec.train.zero_stage = 1;
  spec.train.global_batch = 2048;  // 8.4M tokens
  return spec;
}

void PrintPlan(const char* name, const TrainingPlan& p) {
  std::printf("%s: %lld parameters (%lld non-embedding), %.4e FLOPs/token, %lld tokens/step\n",
              name, static_cast<long long>(p.parameters), static_cast<long long>(p.non_embedding),
              p.flops_per_token, static_cast<long long>(p.tokens_per_step));
  for (size_t s = 0; s < 3; ++s) {
    const RankBytes& b = p.stages[s];
    std::printf(
        "  stage %zu per GPU: weights %s, gradients %s, optimizer %s, activations %s, total %s\n",
        s, FormatBytes(b.weights).c_str(), FormatBytes(b.gradients).c_str(),
        FormatBytes(b.optimizer).c_str(), FormatBytes(b.activations).c_str(),
        FormatBytes(b.total()).c_str());
  }
}

TEST(TrainingPlan, PublishedApertus8BAnd70BShapes) {
  const TrainingPlan p8 = *PlanTraining(PublishedApertus(32, 4096, 32, 21504, 1024));
  const TrainingPlan p70 = *PlanTraining(PublishedApertus(80, 8192, 64, 43008, 2048));
  PrintPlan("Apertus-8B", p8);
  PrintPlan("Apertus-70B", p70);
  // The released 8B checkpoint is reported to load with 8,053,338,176 parameters (its xIELU
  // scalars included); the vocabulary is a multiple of 128, so no padding rows are added.
  EXPECT_EQ(p8.parameters, 8053338176);
  // The 70B: "70B" in the report; 80 layers of 855,654,658 parameters, two 131072×8192
  // embeddings and the final norm.
  EXPECT_EQ(p70.parameters, 80 * int64_t{855654658} + 2 * int64_t{131072} * 8192 + 8192);
  EXPECT_EQ(p70.parameters, 70599864480);
  EXPECT_NEAR(static_cast<double>(p70.parameters), 70.6e9, 0.05e9);
  // The tech report's 4.496e11 FLOPs/token at seq 4096, to the digits it gives.
  EXPECT_NEAR(p70.flops_per_token, 4.496e11, 0.001 * 4.496e11);
  EXPECT_EQ(p70.tokens_per_step, 2048 * 4096);
  // Whole bf16 weights and fp32 master weights per GPU: the 70B cannot fit a 96 GiB GH200
  // with ZeRO alone at any stage (it needs tensor or pipeline parallelism, or ZeRO-3).
  for (const RankBytes& b : p70.stages) EXPECT_GT(b.total(), *GpuMemoryBytes("gh200"));
  EXPECT_GE(p70.stages[2].weights, 2 * p70.parameters);
}

TEST(TrainingPlan, ByteSizesParseInBinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("64GiB"), int64_t{64} << 30);
  EXPECT_EQ(*ParseByteSize("80 G"), int64_t{80} << 30);
  EXPECT_EQ(*ParseByteSize("96GB"), int64_t{96'000'000'000});
  EXPECT_EQ(*ParseByteSize("1.5TiB"), int64_t{3} << 39);
  EXPECT_EQ(*ParseByteSize("512mib"), int64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("1073741824"), int64_t{1} << 30);
  for (const char* bad : {"", "GiB", "12 parsecs", "1.2.3G", "-5G", "0"}) {
    EXPECT_FALSE(ParseByteSize(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(*GpuMemoryBytes("H100"), int64_t{80} << 30);
  EXPECT_EQ(*GpuMemoryBytes("h200"), int64_t{141} << 30);
  EXPECT_FALSE(GpuMemoryBytes("h900").has_value());
}

}  // namespace
}  // namespace belay::train

// belay export: the safetensors writer, bfloat16 rounding, the saved model config, reading a
// checkpoint's parameters whatever its world size, and what is refused (corrupt shards,
// unknown architectures, models Hugging Face's classes cannot compute).
#include "worker/export/export.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "common/ckpt/test_dir.h"
#include "common/rng.h"
#include "tests/model/small_apertus.h"
#include "worker/export/checkpoint_model.h"
#include "worker/export/hf_model.h"
#include "worker/export/safetensors.h"
#include "worker/export/test_checkpoint.h"

namespace belay::hf {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Bf16RoundNearestEven, RoundsToNearestAndTiesToEven) {
  EXPECT_EQ(Bf16RoundNearestEven(1.0f), 0x3f80);
  EXPECT_EQ(Bf16RoundNearestEven(-2.0f), 0xc000);
  // Just below and above one half of the last kept bit.
  EXPECT_EQ(Bf16RoundNearestEven(FromBits(0x3f807fff)), 0x3f80);
  EXPECT_EQ(Bf16RoundNearestEven(FromBits(0x3f808001)), 0x3f81);
  // Exactly one half: to the even neighbour, down from even, up from odd.
  EXPECT_EQ(Bf16RoundNearestEven(FromBits(0x3f808000)), 0x3f80);
  EXPECT_EQ(Bf16RoundNearestEven(FromBits(0x3f818000)), 0x3f82);
  // The largest finite floats round to infinity; infinities and NaNs stay what they are.
  EXPECT_EQ(Bf16RoundNearestEven(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(Bf16RoundNearestEven(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = Bf16RoundNearestEven(FromBits(0x7f800001));
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
}

class ExportTest : public ckpt::TempDirTest {};

TEST_F(ExportTest, SafetensorsHeaderDescribesAlignedContiguousTensors) {
  const std::vector<NamedTensor> tensors = {
      {"a", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"b.scalar", {}, {0.5f}}, {"c", {1}, {-1}}};
  const fs::path path = dir() / "model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors, ExportDType::kF32, {{"format", "pt"}}).ok());
  const std::string bytes = ReadFile(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(header["b.scalar"]["shape"], nlohmann::json::array());
  EXPECT_EQ(header["b.scalar"]["data_offsets"], nlohmann::json({24, 28}));
  EXPECT_EQ(header["c"]["data_offsets"], nlohmann::json({28, 32}));
  ASSERT_EQ(bytes.size(), 8 + n + 32);
  float last = 0;
  std::memcpy(&last, bytes.data() + 8 + n + 28, 4);
  EXPECT_EQ(last, -1.0f);

  ASSERT_TRUE(WriteSafetensors(path, tensors, ExportDType::kBf16, {}).ok());
  const std::string half = ReadFile(path);
  std::memcpy(&n, half.data(), 8);
  EXPECT_EQ(nlohmann::json::parse(half.substr(8, n))["c"]["data_offsets"],
            nlohmann::json({14, 16}));
  EXPECT_EQ(half.size(), 8 + n + 16);
}

TEST_F(ExportTest, SafetensorsRefusesAShapeThatDoesNotFitTheValues) {
  const absl::Status s =
      WriteSafetensors(dir() / "x.safetensors", {{"a", {2, 2}, {1, 2, 3}}}, ExportDType::kF32, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir() / "x.safetensors"));
}

TEST(ModelConfigFromJson, AModelWithoutArchIsGpt2) {
  const nlohmann::json j = {{"n_layer", 2},      {"n_head", 2},       {"d_model", 64},
                            {"max_seq_len", 32}, {"vocab_size", 257}, {"padded_vocab", 384}};
  absl::StatusOr<SavedModelConfig> c = ModelConfigFromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(std::holds_alternative<model::Gpt2Config>(*c));
  EXPECT_EQ(std::get<model::Gpt2Config>(*c).padded_vocab, 384);
}

TEST(ModelConfigFromJson, AnUnknownArchIsRefusedByName) {
  absl::StatusOr<SavedModelConfig> c = ModelConfigFromJson({{"arch", "mamba"}, {"n_layer", 2}});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("\"mamba\""));
}

TEST(ModelConfigFromJson, ApertusKeysRoundTrip) {
  model::ApertusConfig c = ::belay::testing::SmallApertusConfig();
  c.eod_token = 3;
  absl::StatusOr<SavedModelConfig> back = ModelConfigFromJson(model::ApertusRecord(c, 64));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(std::get<SavedApertus>(*back).config, c);
  EXPECT_EQ(std::get<SavedApertus>(*back).max_seq_len, 64);
  nlohmann::json broken = model::ApertusRecord(c, 64);
  broken.erase("n_kv_head");
  EXPECT_THAT(ModelConfigFromJson(broken).status().message(), HasSubstr("model.n_kv_head"));
}

// A small Apertus model with random parameters, written as a checkpoint by `world` ranks.
class ApertusCheckpointTest : public ckpt::TempDirTest {
 protected:
  void SetUp() override {
    ckpt::TempDirTest::SetUp();
    config_ = ::belay::testing::SmallApertusConfig();
  }
  void Write(int world) {
    const model::ApertusLayout layout(config_);
    params_.assign(static_cast<size_t>(layout.total()), 0.0f);
    SplitMix64 rng(3);
    for (float& p : params_) p = static_cast<float>(rng.Normal());
    const absl::Status s = testing::WriteTestCheckpoint(
        dir(), "camp", 7, model::ApertusRecord(config_, 64), layout.tensors(), params_, world);
    ASSERT_TRUE(s.ok()) << s;
  }
  fs::path StepDir() const { return ckpt::StepDir(dir(), "camp", 7); }

  model::ApertusConfig config_;
  std::vector<float> params_;
};

TEST_F(ApertusCheckpointTest, ParametersReadBackWholeFromThreeShards) {
  Write(3);
  absl::StatusOr<CheckpointModel> m = ReadCheckpointModel(StepDir());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->step, 7);
  EXPECT_EQ(m->campaign, "camp");
  EXPECT_EQ(std::get<SavedApertus>(m->config).config, config_);
  EXPECT_EQ(m->params, params_);
}

TEST_F(ApertusCheckpointTest, RootAndCampaignDirectoryResolveToTheNewestStep) {
  Write(1);
  const model::ApertusLayout layout(config_);
  ASSERT_TRUE(testing::WriteTestCheckpoint(dir(), "camp", 9, model::ApertusRecord(config_, 64),
                                           layout.tensors(), params_, 1)
                  .ok());
  EXPECT_EQ(*ResolveStepDir(dir()), ckpt::StepDir(dir(), "camp", 9));
  EXPECT_EQ(*ResolveStepDir(dir() / "camp"), ckpt::StepDir(dir(), "camp", 9));
  EXPECT_EQ(*ResolveStepDir(StepDir()), StepDir());
  EXPECT_EQ(ResolveStepDir(dir() / "none").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ApertusCheckpointTest, ACorruptShardIsRefusedNamingTheFile) {
  Write(2);
  const fs::path shard = StepDir() / ckpt::ShardFileName(1);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    char c = 0;
    f.read(&c, 1);
    f.seekp(200);
    c = static_cast<char>(c ^ 0x10);
    f.write(&c, 1);
  }
  absl::StatusOr<ExportSummary> s =
      ExportCheckpoint({.checkpoint = StepDir(), .out = dir() / "hf"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.status().message(), HasSubstr(shard.string()));
  EXPECT_FALSE(fs::exists(dir() / "hf" / "model.safetensors"));
}

TEST_F(ApertusCheckpointTest, AMissingShardIsRefusedNamingTheFile) {
  Write(2);
  fs::remove(StepDir() / ckpt::ShardFileName(1));
  absl::StatusOr<ExportSummary> s =
      ExportCheckpoint({.checkpoint = StepDir(), .out = dir() / "hf"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr(ckpt::ShardFileName(1)));
}

TEST_F(ApertusCheckpointTest, AnUnknownArchIsRefused) {
  const model::ApertusLayout layout(config_);
  params_.assign(static_cast<size_t>(layout.total()), 0.0f);
  nlohmann::json model = belay::model::ApertusRecord(config_, 64);
  model["arch"] = "rwkv";
  ASSERT_TRUE(
      testing::WriteTestCheckpoint(dir(), "camp", 7, model, layout.tensors(), params_, 1).ok());
  absl::StatusOr<ExportSummary> s =
      ExportCheckpoint({.checkpoint = StepDir(), .out = dir() / "hf"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("unknown architecture \"rwkv\""));
}

TEST_F(ApertusCheckpointTest, SwigluAndModelsWithoutQkNormAreRefused) {
  config_.activation = model::MlpActivation::kSwiglu;
  Write(1);
  absl::StatusOr<ExportSummary> s =
      ExportCheckpoint({.checkpoint = StepDir(), .out = dir() / "hf"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("swiglu"));

  config_.activation = model::MlpActivation::kXielu;
  config_.qk_norm = false;
  const model::ApertusLayout layout(config_);
  std::vector<float> params(static_cast<size_t>(layout.total()), 1.0f);
  ASSERT_TRUE(testing::WriteTestCheckpoint(dir(), "other", 1, model::ApertusRecord(config_, 64),
                                           layout.tensors(), params, 1)
                  .ok());
  s = ExportCheckpoint({.checkpoint = dir() / "other", .out = dir() / "hf"});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("qk_norm"));
}

TEST_F(ApertusCheckpointTest, TheFusedProjectionSplitsIntoQueryKeyAndValueRows) {
  Write(1);
  absl::StatusOr<CheckpointModel> m = ReadCheckpointModel(StepDir());
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<HfModel> hf = ToHf(*m);
  ASSERT_TRUE(hf.ok()) << hf.status();
  const model::ApertusLayout layout(config_);
  const model::TensorView& qkv = layout.at("h.attn.qkv.weight");
  const int64_t C = 64, hs = 16, W = (4 + 2 * 2) * hs;
  for (const NamedTensor& t : hf->tensors) {
    // Layer 1's value projection: rows (NH + NKV)·hs … of layer 1's fused weight.
    if (t.name != "model.layers.1.self_attn.v_proj.weight") continue;
    ASSERT_EQ(t.shape, (std::vector<int64_t>{2 * hs, C}));
    const float* from = params_.data() + qkv.offset + W * C + 6 * hs * C;
    EXPECT_EQ(t.values, std::vector<float>(from, from + 2 * hs * C));
    return;
  }
  FAIL() << "no v_proj of layer 1";
}

}  // namespace
}  // namespace belay::hf

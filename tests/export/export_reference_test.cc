// `belay export` against an independent reader: checkpoints written by belay-worker — GPT-2 on
// one rank and on two MPI ranks with ZeRO 1 and 2, Apertus on two ranks with ZeRO 2, AdEMAMix
// and document masking — and an Apertus with GELU and a tied head written through the shard
// writer are exported in fp32 and bf16; tests/export/hf_reference.py reads the files by hand,
// checks the bf16 rounding, loads the fp32 weights into the float64 PyTorch references of
// tests/model and its logits must match belay's own forward on the same tokens to 1e-5
// relative L2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

#include "common/ckpt/manifest.h"
#include "common/rng.h"
#include "nlohmann/json.hpp"
#include "tests/model/raw_files.h"
#include "tests/model/small_apertus.h"
#include "worker/export/checkpoint_model.h"
#include "worker/export/export.h"
#include "worker/export/test_checkpoint.h"
#include "worker/model/apertus.h"
#include "worker/model/gpt2.h"

namespace belay {
namespace {

namespace fs = std::filesystem;
using ::belay::testing::ReadF64;
using ::belay::testing::WriteRaw;

class ExportReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name) c = c == '/' ? '_' : c;
    dir_ = fs::path(::testing::TempDir()) /
           ("belay_export_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Exports `checkpoint` in both dtypes, runs the reference on `tokens` (B×T) and returns the
  // relative L2 distance of its logits from `logits` (B×T×Vp, belay's, padded columns
  // ignored).
  double ExportAndCompare(const fs::path& checkpoint, const std::vector<int32_t>& tokens, int B,
                          int T, int V, int Vp, const std::vector<float>& logits) {
    for (auto [dtype, sub] :
         {std::pair{hf::ExportDType::kF32, "fp32"}, std::pair{hf::ExportDType::kBf16, "bf16"}}) {
      absl::StatusOr<hf::ExportSummary> s =
          hf::ExportCheckpoint({.checkpoint = checkpoint, .out = dir_ / sub, .dtype = dtype});
      EXPECT_TRUE(s.ok()) << s.status();
      if (!s.ok()) return INFINITY;
    }
    WriteRaw(dir_ / "tokens.i32", tokens);
    const std::string cmd = "/usr/bin/python3 " BELAY_SOURCE_DIR "/tests/export/hf_reference.py " +
                            (dir_ / "fp32").string() + " " + (dir_ / "bf16").string() + " " +
                            (dir_ / "tokens.i32").string() + " " + std::to_string(B) + " " +
                            std::to_string(T) + " " + (dir_ / "ref_logits.f64").string();
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const std::vector<double> ref = ReadF64(dir_ / "ref_logits.f64");
    EXPECT_EQ(ref.size(), static_cast<size_t>(B) * T * V);
    if (ref.size() != static_cast<size_t>(B) * T * V) return INFINITY;
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double ours = logits[(i / static_cast<size_t>(V)) * static_cast<size_t>(Vp) +
                                 i % static_cast<size_t>(V)];
      num += (ours - ref[i]) * (ours - ref[i]);
      den += ref[i] * ref[i];
    }
    return std::sqrt(num / den);
  }

  // Trains the tiny campaign of tests/export/train_tiny.sh with `settings` added on `ranks`
  // ranks at ZeRO `zero_stage`; returns the checkpoint root.
  fs::path TrainTiny(int ranks, int zero_stage, const std::string& settings = "") {
    const std::string cmd = BELAY_SOURCE_DIR "/tests/export/train_tiny.sh " BELAY_BIN_DIR " " +
                            (dir_ / "run").string() + " " + std::to_string(ranks) + " " +
                            std::to_string(zero_stage) + " " + settings;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return dir_ / "run" / "ckpt";
  }

  fs::path dir_;
};

// The committed step under `root`, written by `ranks` ranks each of which holds part of the
// parameters.
absl::StatusOr<fs::path> StepOfRanks(const fs::path& root, int ranks) {
  absl::StatusOr<fs::path> step = hf::ResolveStepDir(root);
  if (!step.ok()) return step.status();
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(*step);
  if (!manifest.ok()) return manifest.status();
  EXPECT_EQ(manifest->world_size, ranks);
  for (int r = 0; r < manifest->world_size; ++r) {
    bool params = false;
    for (const auto& [name, range] : manifest->shard_map->OfRank(r))
      params = params || name.starts_with("param/");
    EXPECT_TRUE(params) << "rank " << r << " holds no parameter";
  }
  return step;
}

std::vector<int32_t> RandomTokens(int64_t n, int vocab, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(vocab));
  return tokens;
}

struct Gpt2Run {
  int ranks;
  int zero_stage;
};

void PrintTo(const Gpt2Run& r, std::ostream* os) {
  *os << r.ranks << " ranks, ZeRO " << r.zero_stage;
}

class Gpt2Export : public ExportReferenceTest, public ::testing::WithParamInterface<Gpt2Run> {};

TEST_P(Gpt2Export, HuggingFaceLayoutComputesBelaysLogits) {
  const fs::path root = TrainTiny(GetParam().ranks, GetParam().zero_stage);
  absl::StatusOr<fs::path> step = StepOfRanks(root, GetParam().ranks);
  ASSERT_TRUE(step.ok()) << step.status();
  absl::StatusOr<hf::CheckpointModel> checkpoint = hf::ReadCheckpointModel(*step);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const model::Gpt2Config c = std::get<model::Gpt2Config>(checkpoint->config);
  const model::ParameterLayout layout(c);
  const int B = 2, T = c.max_seq_len;
  const std::vector<int32_t> tokens = RandomTokens(int64_t{B} * T, c.vocab_size, 11);
  model::Gpt2 gpt2(layout, B, T);
  const std::vector<uint8_t> all(tokens.size(), 1);
  gpt2.Forward(checkpoint->params.data(), tokens.data(), tokens.data(), all.data());
  const double err =
      ExportAndCompare(root, tokens, B, T, c.vocab_size, c.padded_vocab, gpt2.logits());
  std::cout << "logits: relative L2 error " << err << "\n";
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Worlds, Gpt2Export,
                         ::testing::Values(Gpt2Run{1, 0}, Gpt2Run{2, 1}, Gpt2Run{2, 2}),
                         [](const ::testing::TestParamInfo<Gpt2Run>& p) {
                           return std::to_string(p.param.ranks) + "Ranks" + "Zero" +
                                  std::to_string(p.param.zero_stage);
                         });

// Apertus as belay-worker trains it (xIELU, untied head, GQA, QK-norm, Llama-3 RoPE scaling
// whose every branch is used at the original context of 32): two MPI ranks under ZeRO 2 with
// AdEMAMix (both warmups running) and document masking, the newline byte ending documents so
// that most sequences hold two.
TEST_F(ExportReferenceTest, ApertusTrainedByTheWorkerComputesBelaysLogits) {
  const fs::path root = TrainTiny(
      2, 2,
      "model.arch=apertus model.n_head=4 model.n_kv_head=2 model.d_model=64 model.d_ff=96 "
      "model.rope_theta=10000 model.rope_scaling.factor=8.0 "
      "model.rope_scaling.original_context=32 data.document_masking=true data.eod_token=10 "
      "optimizer.name=ademamix optimizer.alpha_warmup_steps=3 optimizer.beta3_warmup_steps=3");
  absl::StatusOr<fs::path> step = StepOfRanks(root, 2);
  ASSERT_TRUE(step.ok()) << step.status();
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(*step);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  bool slow_ema = false;
  for (int r = 0; r < manifest->world_size; ++r) {
    for (const auto& [name, range] : manifest->shard_map->OfRank(r))
      slow_ema = slow_ema || name.starts_with("ademamix.m_slow/");
  }
  EXPECT_TRUE(slow_ema) << "the checkpoint holds no AdEMAMix state";

  absl::StatusOr<hf::CheckpointModel> checkpoint = hf::ReadCheckpointModel(*step);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const hf::SavedApertus saved = std::get<hf::SavedApertus>(checkpoint->config);
  const model::ApertusConfig& c = saved.config;
  ASSERT_EQ(c.eod_token, 10);
  ASSERT_EQ(c.n_kv_head, 2);
  ASSERT_EQ(c.rope.factor, 8.0);
  const model::ApertusLayout layout(c);
  // Hugging Face's model has no document mask: tokens without the EOD token, on which belay's
  // forward with document masking is the plain causal one.
  const int B = 2, T = saved.max_seq_len;
  std::vector<int32_t> tokens = RandomTokens(int64_t{B} * T, c.vocab_size, 12);
  for (int32_t& t : tokens) t = t == c.eod_token ? c.eod_token + 1 : t;
  model::ApertusModel m(layout, B, T);
  m.Forward(checkpoint->params.data(), tokens.data(), tokens.data(), nullptr);
  const double err =
      ExportAndCompare(root, tokens, B, T, c.vocab_size, c.padded_vocab(), m.logits());
  std::cout << "logits: relative L2 error " << err << "\n";
  EXPECT_LE(err, 1e-5);

  // The document end is the model's end of sequence; the original context an integer.
  const nlohmann::json config =
      nlohmann::json::parse(std::ifstream(dir_ / "fp32" / "config.json"), nullptr, false);
  ASSERT_TRUE(config.is_object());
  EXPECT_EQ(config["eos_token_id"], 10);
  EXPECT_TRUE(config["rope_scaling"]["original_max_position_embeddings"].is_number_integer())
      << config["rope_scaling"].dump();
  EXPECT_EQ(config["rope_scaling"]["original_max_position_embeddings"], 32);
}

// Apertus with GELU and a tied head (the variant the trained case does not cover), written
// through the shard writer with weights well beyond their initial scale, so that every op
// works in its non-linear range and a query or key row in the wrong place shows.
TEST_F(ExportReferenceTest, ApertusGeluTiedComputesBelaysLogits) {
  model::ApertusConfig c = ::belay::testing::SmallApertusConfig();
  c.activation = model::MlpActivation::kGelu;
  c.tie_embeddings = true;
  const model::ApertusLayout layout(c);
  const std::vector<float> params = ::belay::testing::NoisyApertusParams(layout, 77, 8);
  const int B = 2, T = 32;
  ASSERT_TRUE(hf::testing::WriteTestCheckpoint(dir_ / "ckpt", "apertus", 5,
                                               model::ApertusRecord(c, T), layout.tensors(), params,
                                               1)
                  .ok());
  const std::vector<int32_t> tokens = RandomTokens(int64_t{B} * T, c.vocab_size, 12);
  model::ApertusModel m(layout, B, T);
  m.Forward(params.data(), tokens.data(), tokens.data(), nullptr);
  const double err =
      ExportAndCompare(dir_ / "ckpt", tokens, B, T, c.vocab_size, c.padded_vocab(), m.logits());
  std::cout << "logits: relative L2 error " << err << "\n";
  EXPECT_LE(err, 1e-5);
}

}  // namespace
}  // namespace belay

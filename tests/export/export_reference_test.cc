// `belay export` against an independent reader: checkpoints of GPT-2 written by belay-worker
// (one rank; two MPI ranks with ZeRO 1 and 2) and of Apertus written through the shard writer are
// exported in fp32 and bf16; tests/export/hf_reference.py reads the files by hand, checks the
// bf16 rounding, loads the fp32 weights into the float64 PyTorch references of tests/model
// and its logits must match belay's own forward on the same tokens to 1e-5 relative L2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "common/ckpt/manifest.h"
#include "common/rng.h"
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

  fs::path dir_;
};

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
  const std::string train = BELAY_SOURCE_DIR "/tests/export/train_gpt2.sh " BELAY_BIN_DIR " " +
                            (dir_ / "run").string() + " " + std::to_string(GetParam().ranks) + " " +
                            std::to_string(GetParam().zero_stage);
  ASSERT_EQ(std::system(train.c_str()), 0) << train;
  const fs::path root = dir_ / "run" / "ckpt";
  absl::StatusOr<fs::path> step = hf::ResolveStepDir(root);
  ASSERT_TRUE(step.ok()) << step.status();
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(*step);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(manifest->world_size, GetParam().ranks);
  // Each rank's shard holds part of the parameters.
  for (int r = 0; r < manifest->world_size; ++r) {
    bool params = false;
    for (const auto& [name, range] : manifest->shard_map->OfRank(r))
      params = params || name.starts_with("param/");
    EXPECT_TRUE(params) << "rank " << r << " holds no parameter";
  }
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

struct ApertusVariant {
  model::MlpActivation activation;
  bool tie_embeddings;
};

void PrintTo(const ApertusVariant& v, std::ostream* os) {
  *os << (v.activation == model::MlpActivation::kXielu ? "xIELU" : "GELU")
      << (v.tie_embeddings ? ", tied" : ", untied");
}

class ApertusExport : public ExportReferenceTest,
                      public ::testing::WithParamInterface<ApertusVariant> {};

TEST_P(ApertusExport, HuggingFaceLayoutComputesBelaysLogits) {
  model::ApertusConfig c = ::belay::testing::SmallApertusConfig();
  c.activation = GetParam().activation;
  c.tie_embeddings = GetParam().tie_embeddings;
  const model::ApertusLayout layout(c);
  std::vector<float> params(static_cast<size_t>(layout.total()));
  model::InitApertus(layout, params, 77);
  // Larger than initial weights, so that every op works in its non-linear range (and a query
  // or key row in the wrong place shows); the padded vocabulary rows stay 0.
  SplitMix64 noise(8);
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const model::TensorView& t = layout.tensors()[i];
    const bool vocab = layout.kind(i) == model::ApertusTensor::kEmbed ||
                       layout.kind(i) == model::ApertusTensor::kLmHead;
    const int64_t real = vocab ? int64_t{c.vocab_size} * c.d_model : t.size;
    for (int64_t j = 0; j < real; ++j)
      params[static_cast<size_t>(t.offset + j)] += static_cast<float>(0.1 * noise.Normal());
  }
  const int B = 2, T = 32;
  ASSERT_TRUE(hf::testing::WriteTestCheckpoint(dir_ / "ckpt", "apertus", 5,
                                               hf::testing::ApertusModelJson(c, T),
                                               layout.tensors(), params, 1)
                  .ok());
  const std::vector<int32_t> tokens = RandomTokens(int64_t{B} * T, c.vocab_size, 12);
  model::ApertusModel m(layout, B, T);
  m.Forward(params.data(), tokens.data(), tokens.data(), nullptr);
  const double err =
      ExportAndCompare(dir_ / "ckpt", tokens, B, T, c.vocab_size, c.padded_vocab(), m.logits());
  std::cout << "logits: relative L2 error " << err << "\n";
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Variants, ApertusExport,
                         ::testing::Values(ApertusVariant{model::MlpActivation::kXielu, false},
                                           ApertusVariant{model::MlpActivation::kGelu, true}),
                         [](const ::testing::TestParamInfo<ApertusVariant>& p) {
                           return std::string(p.param.activation == model::MlpActivation::kXielu
                                                  ? "Xielu"
                                                  : "Gelu") +
                                  (p.param.tie_embeddings ? "Tied" : "Untied");
                         });

}  // namespace
}  // namespace belay

// model::Architecture: the model a campaign names, what a checkpoint records of it, and the
// CPU model and fault injection the trainer uses, for both architectures.
#include "worker/model/architecture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/testing/tiny_campaign.h"

namespace belay::model {
namespace {

using belay::testing::TinyCampaignSpec;

CampaignSpec Apertus() {
  CampaignSpec spec = TinyCampaignSpec();
  spec.model.arch = ModelArch::kApertus;
  spec.model.n_head = 4;
  spec.model.n_kv_head = 2;
  spec.model.d_model = 32;
  spec.model.d_ff = 48;
  spec.model.rope_scaling = RopeScalingSpec{.factor = 8.0, .original_context = 16};
  spec.data.document_masking = true;
  spec.data.eod_token = 256;
  return spec;
}

// The summed loss of one micro-batch of `arch` with `params`.
double Loss(const Architecture& arch, const std::vector<float>& params, int T) {
  const int B = 2;
  std::vector<int32_t> inputs(static_cast<size_t>(B * T)), targets(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = static_cast<int32_t>(i * 7 % 250);
    targets[i] = static_cast<int32_t>(i * 11 % 250);
  }
  std::vector<uint8_t> mask(inputs.size(), 1);
  return arch.NewCpuModel(B, T)->Forward(params.data(), inputs.data(), targets.data(), mask.data());
}

TEST(Architecture, Gpt2RecordsItsShapeAndArchitecture) {
  const CampaignSpec spec = TinyCampaignSpec();
  auto arch = Architecture::FromSpec(spec);
  ASSERT_TRUE(arch.ok()) << arch.status();
  EXPECT_EQ((*arch)->arch(), ModelArch::kGpt2);
  ASSERT_NE((*arch)->gpt2(), nullptr);
  EXPECT_EQ((*arch)->apertus(), nullptr);
  const nlohmann::json c = (*arch)->Config();
  EXPECT_EQ(c["arch"], "gpt2");
  EXPECT_EQ(c["n_layer"], spec.model.n_layer);
  EXPECT_EQ(c["max_seq_len"], spec.model.seq_len);
  EXPECT_EQ(c["padded_vocab"], 384);
  EXPECT_EQ((*arch)->total(), (*arch)->gpt2()->total());
}

TEST(Architecture, ApertusRecordsItsShapeAndDocumentMasking) {
  auto arch = Architecture::FromSpec(Apertus());
  ASSERT_TRUE(arch.ok()) << arch.status();
  ASSERT_NE((*arch)->apertus(), nullptr);
  const nlohmann::json c = (*arch)->Config();
  EXPECT_EQ(c["arch"], "apertus");
  EXPECT_EQ(c["n_kv_head"], 2);
  EXPECT_EQ(c["d_ff"], 48);
  EXPECT_EQ(c["eod_token"], 256);
  EXPECT_EQ(c["activation"], "xielu");
  EXPECT_EQ(c["rope_scaling"]["factor"], 8.0);
  EXPECT_EQ(c["rope_scaling"]["original_context"], 16.0);
  // Without scaling the record says so; without document masking there is no EOD token.
  CampaignSpec plain = Apertus();
  plain.model.rope_scaling.reset();
  plain.data.document_masking = false;
  const nlohmann::json p = (*Architecture::FromSpec(plain))->Config();
  EXPECT_TRUE(p["rope_scaling"].is_null());
  EXPECT_EQ(p["eod_token"], -1);
}

TEST(Architecture, AnApertusShapeItCannotBuildIsRefused) {
  CampaignSpec spec = Apertus();
  spec.model.n_kv_head = 3;  // does not divide 4 query heads
  auto arch = Architecture::FromSpec(spec);
  ASSERT_FALSE(arch.ok());
  EXPECT_EQ(arch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(arch.status().message().find("n_kv_head must divide n_head"), std::string::npos)
      << arch.status();
}

TEST(Architecture, RecordsWithoutAnArchitectureAreGpt2s) {
  nlohmann::json old = {{"n_layer", 2}, {"n_head", 2}};
  EXPECT_EQ(NormalizedConfig(old)["arch"], "gpt2");
  const nlohmann::json gpt2 = (*Architecture::FromSpec(TinyCampaignSpec()))->Config();
  nlohmann::json without = gpt2;
  without.erase("arch");
  EXPECT_EQ(NormalizedConfig(without), NormalizedConfig(gpt2));
}

TEST(Architecture, ApertusRecordsCompareAtAnyContextLength) {
  CampaignSpec longer = Apertus();
  longer.model.seq_len *= 4;
  const nlohmann::json a = (*Architecture::FromSpec(Apertus()))->Config();
  const nlohmann::json b = (*Architecture::FromSpec(longer))->Config();
  EXPECT_NE(a, b);
  EXPECT_EQ(NormalizedConfig(a), NormalizedConfig(b));
  // GPT-2's position table makes its context length part of the model.
  CampaignSpec gpt2_longer = TinyCampaignSpec();
  gpt2_longer.model.seq_len *= 2;
  EXPECT_NE(NormalizedConfig((*Architecture::FromSpec(TinyCampaignSpec()))->Config()),
            NormalizedConfig((*Architecture::FromSpec(gpt2_longer))->Config()));
}

TEST(Architecture, ThePoisonedParameterMakesTheLossNaN) {
  for (const CampaignSpec& spec : {TinyCampaignSpec(), Apertus()}) {
    auto arch = Architecture::FromSpec(spec);
    ASSERT_TRUE(arch.ok()) << arch.status();
    std::vector<float> params(static_cast<size_t>((*arch)->total()));
    (*arch)->Init(params, 7);
    const int T = static_cast<int>(spec.model.seq_len);
    EXPECT_TRUE(std::isfinite(Loss(**arch, params, T))) << ToString(spec.model.arch);
    params[static_cast<size_t>((*arch)->PoisonOffset())] = std::nanf("");
    EXPECT_TRUE(std::isnan(Loss(**arch, params, T))) << ToString(spec.model.arch);
  }
}

TEST(Architecture, GradientGroupsCoverEveryParameterOnce) {
  for (const CampaignSpec& spec : {TinyCampaignSpec(), Apertus()}) {
    auto arch = Architecture::FromSpec(spec);
    ASSERT_TRUE(arch.ok()) << arch.status();
    std::vector<int> seen(static_cast<size_t>((*arch)->total()), 0);
    for (const auto& group : (*arch)->GradientGroups()) {
      for (const Segment& s : group) {
        for (int64_t i = 0; i < s.size; ++i) ++seen[static_cast<size_t>(s.offset + i)];
      }
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), (*arch)->total())
        << ToString(spec.model.arch);
  }
}

}  // namespace
}  // namespace belay::model

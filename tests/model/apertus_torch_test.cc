// belay's Apertus model against PyTorch: the same parameters and tokens (two documents per
// row, a caller loss mask on top) go through belay's fp32 CPU path and through
// tests/model/apertus_reference.py in float64; the logits and every parameter's gradient must
// agree to 1e-5 relative L2, with GQA, QK-norm, Llama-3 RoPE scaling and document masking on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/rng.h"
#include "tests/model/compare.h"
#include "tests/model/raw_files.h"
#include "tests/model/small_apertus.h"
#include "worker/model/apertus.h"

namespace belay {
namespace {

using testing::NoisyApertusParams;
using testing::ReadF64;
using testing::RelativeL2;
using testing::SmallApertusConfig;
using testing::WriteApertusReferenceKeys;
using testing::WriteRaw;

struct Variant {
  model::MlpActivation activation;
  bool tie_embeddings;
};

void PrintTo(const Variant& v, std::ostream* os) {
  *os << ToString(v.activation) << (v.tie_embeddings ? ", tied" : ", untied");
}

class ApertusTorchReference : public ::testing::TestWithParam<Variant> {};

TEST_P(ApertusTorchReference, LogitsAndGradientsMatchPyTorch) {
  model::ApertusConfig c = SmallApertusConfig();
  c.activation = GetParam().activation;
  c.tie_embeddings = GetParam().tie_embeddings;
  c.eod_token = 3;
  const int B = 2, T = 32;
  const int64_t n = int64_t{B} * T;

  model::ApertusLayout layout(c);
  std::vector<float> params = NoisyApertusParams(layout, 77, 8);

  // Two documents per row: EOD at a different place in each row; a caller mask drops a few
  // more positions.
  SplitMix64 rng(5);
  std::vector<int32_t> inputs(static_cast<size_t>(n)), targets(inputs.size());
  std::vector<uint8_t> mask(inputs.size());
  for (int64_t i = 0; i < n; ++i) {
    int32_t tok = static_cast<int32_t>(rng.Next() % 97);
    if (tok == c.eod_token) tok = 4;
    inputs[static_cast<size_t>(i)] = tok;
    targets[static_cast<size_t>(i)] = static_cast<int32_t>(rng.Next() % 97);
    mask[static_cast<size_t>(i)] = rng.Next() % 8 == 0 ? 0 : 1;
  }
  inputs[13] = c.eod_token;
  inputs[T + 20] = c.eod_token;

  std::vector<uint8_t> counted(inputs.size());
  model::ApertusLossMask(counted.data(), inputs.data(), mask.data(), n, c.eod_token);
  const int64_t count = std::count(counted.begin(), counted.end(), uint8_t{1});
  model::ApertusModel m(layout, B, T);
  std::vector<float> grads(params.size(), 0.0f);
  const double loss = m.Forward(params.data(), inputs.data(), targets.data(), mask.data());
  m.Backward(params.data(), grads.data(), 1.0f / static_cast<float>(count));
  ASSERT_EQ(m.positions()[14], 0);
  ASSERT_EQ(m.documents()[T + 21], 1);

  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("apertus_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream cfg(dir / "config.json");
    cfg << "{";
    WriteApertusReferenceKeys(cfg, layout);
    cfg << ", \"batch\": " << B << ", \"seq_len\": " << T << "}\n";
  }
  WriteRaw(dir / "params.f32", params);
  WriteRaw(dir / "inputs.i32", inputs);
  WriteRaw(dir / "targets.i32", targets);
  WriteRaw(dir / "mask.u8", mask);
  const std::string cmd =
      "/usr/bin/python3 " BELAY_SOURCE_DIR "/tests/model/apertus_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  const std::vector<double> ref_logits = ReadF64(dir / "ref_logits.f64");
  const std::vector<double> ref_grads = ReadF64(dir / "ref_grads.f64");
  const std::vector<double> ref_loss = ReadF64(dir / "ref_loss.f64");
  const size_t V = static_cast<size_t>(c.vocab_size), Vp = static_cast<size_t>(c.padded_vocab());
  ASSERT_EQ(ref_logits.size(), static_cast<size_t>(n) * V);
  ASSERT_EQ(ref_grads.size(), params.size());
  ASSERT_EQ(ref_loss.size(), 1u);

  // fp32 against float64: measured ~1e-7; a wrong formula shows at 1e-3 or worse.
  const double mean_loss = loss / static_cast<double>(count);
  std::cout << "loss " << mean_loss << " (PyTorch " << ref_loss[0] << ")\n";
  EXPECT_NEAR(mean_loss, ref_loss[0], 1e-5 * ref_loss[0]);
  const double logits_err =
      RelativeL2([&](size_t i) { return double{m.logits()[(i / V) * Vp + i % V]}; },
                 [&](size_t i) { return ref_logits[i]; }, ref_logits.size());
  std::cout << "logits: relative L2 error " << logits_err << "\n";
  EXPECT_LE(logits_err, 1e-5);
  for (const model::TensorView& t : layout.tensors()) {
    const size_t o = static_cast<size_t>(t.offset);
    const double err =
        RelativeL2([&](size_t i) { return double{grads[o + i]}; },
                   [&](size_t i) { return ref_grads[o + i]; }, static_cast<size_t>(t.size));
    std::cout << "gradient " << t.name << ": relative L2 error " << err << "\n";
    EXPECT_LE(err, 1e-5) << t.name;
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Variants, ApertusTorchReference,
                         ::testing::Values(Variant{model::MlpActivation::kXielu, false},
                                           Variant{model::MlpActivation::kSwiglu, true},
                                           Variant{model::MlpActivation::kGelu, false}),
                         [](const ::testing::TestParamInfo<Variant>& p) {
                           return std::string(ToString(p.param.activation)) +
                                  (p.param.tie_embeddings ? "Tied" : "Untied");
                         });

}  // namespace
}  // namespace belay
